//! Retention: published outbox rows are kept for a window (default 7 days)
//! so `outbox replay` can reach them, then purged in bounded batches; the
//! inbox is purged after its own, longer window.

use std::time::Duration;

use deadpool_postgres::Pool;
use service::shutdown::Signal;

use crate::{Result, inbox};

/// Deletes up to `$2` published rows older than `$1`, oldest first. Walks
/// the primary key from the oldest id, so no index on published_at is
/// needed (and every UPDATE of published_at stays cheaper).
pub const PURGE_OUTBOX_SQL: &str = "\
    DELETE FROM outbox WHERE id IN ( \
        SELECT id FROM outbox WHERE published_at < $1 ORDER BY id LIMIT $2)";

/// How long rows are kept and how much one statement deletes.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub outbox: Duration,
    pub inbox: Duration,
    pub batch: i64,
    /// Time between purges.
    pub every: Duration,
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
    let cutoff = time::OffsetDateTime::now_utc() - window;
    let mut purged = 0;
    loop {
        let deleted = client.execute(PURGE_OUTBOX_SQL, &[&cutoff, &batch]).await?;
        purged += deleted;
        if deleted < batch as u64 {
            return Ok(purged);
        }
    }
}

/// Purges both tables every `retention.every` until `shutdown`.
pub async fn run(pool: Pool, retention: Retention, shutdown: Signal) {
    while !shutdown.is_fired() {
        match purge_outbox(&pool, retention.outbox, retention.batch).await {
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
        tokio::select! {
            _ = tokio::time::sleep(retention.every) => {}
            _ = shutdown.wait() => {}
        }
    }
}
