//! Retention: outbox rows are kept for a window (default 7 days) so
//! `outbox replay` can reach them, then leave with their time partition
//! ([`crate::partitions`]), once sent; the inbox's ids leave the same way
//! after its own, longer window (those recorded apart, in
//! `inbox_untimed`, are purged in bounded batches).

use std::time::Duration;

use deadpool_postgres::Pool;
use platform::settings::{ConfigError, Settings};
use platform::shutdown::Signal;

use crate::partitions::{self, Slicing, Table};
use crate::{Result, inbox, vacuum};

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
    /// How long rows of this service's outbox are kept
    /// (`OUTBOX_RETENTION_HOURS`, fractions allowed: 0.25 is 15 minutes).
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
        let outbox_hours = settings.optional_in(
            "OUTBOX_RETENTION_HOURS",
            "a number of hours from 0.05 (3 minutes) to 87600",
            7.0 * 24.0,
            0.05..=87_600.0,
        )?;
        let inbox_hours: u64 =
            settings.optional("INBOX_RETENTION_HOURS", "a whole number of hours", 14 * 24)?;
        Ok(Retention {
            outbox: Duration::from_secs_f64(outbox_hours * 3600.0),
            inbox: Duration::from_secs(inbox_hours * 3600),
            ..Retention::default()
        })
    }

    /// The outbox's time partitions for its window.
    pub fn slicing(&self) -> Slicing {
        Slicing::for_retention(self.outbox)
    }

    /// The inbox's time partitions for its window.
    pub fn inbox_slicing(&self) -> Slicing {
        Slicing::for_retention(self.inbox)
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

/// Every `retention.every` until `shutdown`: the outbox's and the inbox's
/// partitions (made ahead, dropped once past the window, the outbox's once
/// sent, frozen when cold) and the purge of the ids recorded apart. When
/// the server's autovacuum is off, also vacuums and analyzes those ids,
/// the dead letters, the refused rows and
/// `busy_tables` (the service's own) as autovacuum would (`vacuum`):
/// without it they bloat with dead rows and their statistics go stale.
/// The partitions need none of it: their rows are never updated or
/// deleted.
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
    let tables: Vec<&str> = [
        "inbox_untimed",
        "dead_letters",
        "outbox_refused",
        "outbox_relay_cursor",
    ]
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
    let client = match pool.get().await {
        Ok(client) => client,
        Err(error) => {
            tracing::warn!(%error, "retention skipped: no connection");
            return;
        }
    };
    if let Err(error) = partitions::upkeep(&client, Table::Outbox, &retention.slicing()).await {
        tracing::warn!(%error, "outbox partition upkeep failed; will retry");
    }
    if let Err(error) = partitions::upkeep(&client, Table::Inbox, &retention.inbox_slicing()).await
    {
        tracing::warn!(%error, "inbox partition upkeep failed; will retry");
    }
    match inbox::purge(&client, retention.inbox, retention.batch).await {
        Ok(0) => {}
        Ok(purged) => tracing::info!(purged, "purged inbox ids recorded apart past retention"),
        Err(error) => tracing::warn!(%error, "inbox purge failed"),
    }
}
