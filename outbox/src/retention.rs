//! Retention: published outbox rows are kept for a window (default 7 days)
//! so `outbox replay` can reach them, then purged in bounded batches; the
//! inbox is purged after its own, longer window.

use std::time::Duration;

use deadpool_postgres::Pool;
use platform::settings::{ConfigError, Settings};
use platform::shutdown::Signal;

use crate::{Result, inbox, vacuum};

/// Deletes up to `$2` rows published before `$1`. A row is created before
/// it is published, so the `created_at` bound lets the BRIN index skip
/// every recent block: a purge with nothing to purge reads almost nothing
/// (measured: the scan by id alone read the whole table, 140 ms at 80,000
/// rows), and no index on published_at slows every mark-published.
pub const PURGE_OUTBOX_SQL: &str = "\
    DELETE FROM outbox WHERE id IN ( \
        SELECT id FROM outbox WHERE created_at < $1 AND published_at < $1 LIMIT $2)";

/// How long rows are kept and how much one statement deletes.
///
/// The two windows belong to different pipelines: a service's inbox
/// dedupes the events of the *other* service's outbox, so its inbox window
/// must be longer than the other's outbox window (a replayed event whose
/// id has left the inbox would apply twice). One service cannot see the
/// other's settings, so this is not checked at start; `outbox replay`
/// refuses rows older than the consumer's inbox window instead.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// How long published rows of this service's outbox are kept
    /// (`OUTBOX_RETENTION_HOURS`).
    pub outbox: Duration,
    /// How long this service's inbox remembers the events it applied
    /// (`INBOX_RETENTION_HOURS`).
    pub inbox: Duration,
    pub batch: i64,
    /// Time between purges.
    pub every: Duration,
}

impl Retention {
    /// The two windows from their settings.
    pub fn read(settings: &Settings<'_>) -> Result<Self, ConfigError> {
        let hours = |name: &str, default: u64| {
            settings
                .optional(name, "a whole number of hours", default)
                .map(|hours: u64| Duration::from_secs(hours * 3600))
        };
        Ok(Retention {
            outbox: hours("OUTBOX_RETENTION_HOURS", 7 * 24)?,
            inbox: hours("INBOX_RETENTION_HOURS", 14 * 24)?,
            ..Retention::default()
        })
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            outbox: Duration::from_secs(7 * 24 * 3600),
            inbox: Duration::from_secs(14 * 24 * 3600),
            batch: 5000,
            every: Duration::from_secs(60),
        }
    }
}

/// Purges published outbox rows older than `window`; returns how many.
pub async fn purge_outbox(pool: &Pool, window: Duration, batch: i64) -> Result<u64> {
    let client = pool.get().await?;
    purge_older_than(&client, PURGE_OUTBOX_SQL, window, batch).await
}

/// Runs a purge statement (`$1`: the cutoff time, `$2`: rows per statement)
/// until one deletes less than a batch; returns how many rows went. Small
/// statements keep each transaction, and the locks it holds, short.
pub(crate) async fn purge_older_than(
    client: &tokio_postgres::Client,
    sql: &str,
    window: Duration,
    batch: i64,
) -> Result<u64> {
    let cutoff = time::OffsetDateTime::now_utc() - window;
    let mut purged = 0;
    loop {
        let deleted = client.execute(sql, &[&cutoff, &batch]).await?;
        purged += deleted;
        if deleted < batch as u64 {
            return Ok(purged);
        }
    }
}

/// Purges both tables every `retention.every` until `shutdown`. When the
/// server's autovacuum is off, also vacuums and analyzes the outbox, the
/// inbox, the dead letters and `busy_tables` (the service's own) as
/// autovacuum would (`vacuum`): without it they bloat with dead rows and
/// their statistics go stale.
pub async fn run(
    pool: Pool,
    retention: Retention,
    busy_tables: &'static [&'static str],
    shutdown: Signal,
) {
    let vacuum = vacuum::autovacuum_is_off(&pool).await;
    if vacuum {
        tracing::warn!(
            "PostgreSQL autovacuum is off; this service vacuums its own tables as autovacuum would, looking every {:?} (turn autovacuum on in production)",
            retention.every.min(VACUUM_EVERY)
        );
    }
    let tables: Vec<&str> = ["outbox", "inbox", "dead_letters"]
        .into_iter()
        .chain(busy_tables.iter().copied())
        .collect();
    let mut next_purge = tokio::time::Instant::now();
    while !shutdown.is_cancelled() {
        if vacuum {
            vacuum::vacuum_due(&pool, &tables, &shutdown).await;
        }
        if tokio::time::Instant::now() >= next_purge {
            purge(&pool, &retention).await;
            next_purge = tokio::time::Instant::now() + retention.every;
        }
        let pause = if vacuum {
            retention.every.min(VACUUM_EVERY)
        } else {
            retention.every
        };
        platform::shutdown::sleep(&shutdown, pause).await;
    }
}

/// How often tables are looked at when autovacuum is off.
const VACUUM_EVERY: Duration = Duration::from_secs(30);

async fn purge(pool: &Pool, retention: &Retention) {
    match purge_outbox(pool, retention.outbox, retention.batch).await {
        Ok(0) => {}
        Ok(purged) => tracing::info!(purged, "purged published outbox rows past retention"),
        Err(error) => tracing::warn!(%error, "outbox purge failed"),
    }
    match pool.get().await {
        Ok(client) => match inbox::purge(&client, retention.inbox, retention.batch).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "purged inbox rows past retention"),
            Err(error) => tracing::warn!(%error, "inbox purge failed"),
        },
        Err(error) => tracing::warn!(%error, "inbox purge failed"),
    }
}
