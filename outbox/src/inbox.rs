//! The idempotent inbox: records message ids in the consumer's transaction
//! and tells which ones are new. The effect of a message and its inbox row
//! commit together; a redelivery finds the row and changes nothing.

use std::collections::HashSet;
use std::time::Duration;

use deadpool_postgres::Transaction;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::Result;

/// One statement for the whole batch; ids already present come back absent.
pub const RECORD_SQL: &str = "\
    INSERT INTO inbox (message_id) SELECT * FROM unnest($1::uuid[]) \
    ON CONFLICT (message_id) DO NOTHING RETURNING message_id";

/// Deletes up to `$2` rows received before `$1`.
pub const PURGE_SQL: &str = "\
    DELETE FROM inbox WHERE message_id IN ( \
        SELECT message_id FROM inbox WHERE received_at < $1 LIMIT $2)";

/// Records `ids` and returns those seen for the first time.
pub async fn record(tx: &Transaction<'_>, ids: &[Uuid]) -> Result<HashSet<Uuid>> {
    let statement = tx.prepare_cached(RECORD_SQL).await?;
    let rows = tx.query(&statement, &[&ids]).await?;
    rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
}

/// Purges inbox rows older than `window`, `batch` rows per statement, and
/// returns how many went. The window must be longer than any redelivery
/// or replay can reach back (the outbox keeps rows for its retention
/// window, so the inbox's must be longer).
pub async fn purge(client: &Client, window: Duration, batch: i64) -> Result<u64> {
    crate::retention::purge_older_than(client, PURGE_SQL, window, batch).await
}
