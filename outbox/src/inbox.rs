//! The idempotent inbox: records message ids in the consumer's transaction
//! and tells which ones are new. The effect of a message and its inbox row
//! commit together; a redelivery finds the row and changes nothing.
//!
//! Ids made by this library are UUIDv7, time first: they go to `inbox`,
//! partitioned by the id's time and expired by dropping whole slices
//! ([`crate::partitions`]). Any other id, and an id older than the oldest
//! slice (`inbox_horizon`: a dead letter requeued long after), goes to
//! `inbox_untimed`, purged row by row past the window. Which table an id
//! goes to depends on the id and the horizon only, and the horizon moves
//! only between transactions that record (an advisory lock: shared while
//! recording, exclusive while moving it), so two deliveries of one id
//! meet on one primary key. The horizon moves past a slice a slice's
//! length before the slice goes, and an id routed apart is looked up in
//! the slices too: an id is remembered for the window after it was made,
//! and for at least a slice's length after it was recorded.

use std::collections::HashSet;
use std::time::Duration;

use deadpool_postgres::Transaction;
use time::OffsetDateTime;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::{Error, Result};

/// The advisory lock (both keys) that keeps the horizon still while ids
/// are recorded: `inbx`, 0.
pub(crate) const HORIZON_LOCK: (i32, i32) = (0x696e_6278, 0);

/// Taken by each recording transaction before it reads the horizon
/// (`$1`, `$2`: [`HORIZON_LOCK`]).
const HOLD_HORIZON_SQL: &str = "SELECT pg_advisory_xact_lock_shared($1, $2)";

/// One statement for the whole batch; ids already present come back
/// absent. Ids are looked up in `inbox_untimed` too (before the inbox was
/// sliced, every id went there), and ids routed apart in the slices (one
/// recorded there before the horizon moved past it).
pub const RECORD_SQL: &str = "\
    WITH incoming AS ( \
        SELECT id, (substr(id::text, 15, 1) = '7' \
            AND id >= (SELECT timed_from FROM inbox_horizon)) IS TRUE AS timed \
        FROM unnest($1::uuid[]) AS id \
        WHERE NOT EXISTS (SELECT 1 FROM inbox_untimed u WHERE u.message_id = id)), \
    timed AS ( \
        INSERT INTO inbox (message_id) SELECT id FROM incoming WHERE timed \
        ON CONFLICT (message_id) DO NOTHING RETURNING message_id), \
    untimed AS ( \
        INSERT INTO inbox_untimed (message_id) SELECT id FROM incoming \
        WHERE NOT timed AND NOT EXISTS (SELECT 1 FROM inbox i WHERE i.message_id = id) \
        ON CONFLICT (message_id) DO NOTHING RETURNING message_id) \
    SELECT message_id FROM timed UNION ALL SELECT message_id FROM untimed";

/// Deletes up to `$2` of the ids recorded apart before `$1`.
pub const PURGE_SQL: &str = "\
    DELETE FROM inbox_untimed WHERE message_id IN ( \
        SELECT message_id FROM inbox_untimed WHERE received_at < $1 LIMIT $2)";

/// Records `ids` and returns those seen for the first time. An id from a
/// clock ahead of every slice made so far is refused (in the data: the
/// message becomes a dead letter, to requeue once the clocks agree).
pub async fn record(tx: &Transaction<'_>, ids: &[Uuid]) -> Result<HashSet<Uuid>> {
    let hold = tx.prepare_cached(HOLD_HORIZON_SQL).await?;
    let statement = tx.prepare_cached(RECORD_SQL).await?;
    // Sent together; the server runs the second (and takes its snapshot,
    // which reads the horizon) once it holds the lock.
    let (class, key) = HORIZON_LOCK;
    let lock: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&class, &key];
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&ids];
    let (held, recorded) = tokio::join!(tx.query(&hold, &lock), tx.query(&statement, &params));
    held?;
    let rows = match recorded {
        Ok(rows) => rows,
        Err(error) if error.code() == Some(&SqlState::CHECK_VIOLATION) => {
            return Err(Error::Invalid(format!(
                "message ids ahead of the inbox's time slices, from a clock ahead of this \
                 database's (not recorded, not applied): {ids:?} ({error})"
            )));
        }
        Err(error) => return Err(error.into()),
    };
    rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
}

/// The smallest UUIDv7 of the millisecond `at` (every bit after the time
/// zero): where the inbox's slice of a time begins.
pub fn first_id_at(at: OffsetDateTime) -> Uuid {
    let millis = (at.unix_timestamp_nanos() / 1_000_000).clamp(0, (1 << 48) - 1) as u128;
    Uuid::from_u128(millis << 80)
}

/// Purges the ids recorded apart (`inbox_untimed`) older than `window`,
/// `batch` rows per statement, and returns how many went; the sliced
/// inbox expires by whole partitions instead. The window must be longer
/// than any redelivery or replay can reach back (the outbox keeps rows for
/// its retention window, so the inbox's must be longer).
pub async fn purge(client: &Client, window: Duration, batch: i64) -> Result<u64> {
    crate::retention::purge_older_than(client, PURGE_SQL, window, batch).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_slice_begins_below_every_id_of_its_millisecond() {
        let at = datetime!(2026-12-02 03:05:00 UTC);
        let first = first_id_at(at);
        assert_eq!(first.to_string(), "01a234b6-6b60-0000-0000-000000000000");
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, at.unix_timestamp() as u64, 0);
        let id = Uuid::new_v7(ts);
        assert!(first <= id && id < first_id_at(at + time::Duration::MILLISECOND));
        assert_eq!(id.get_version_num(), 7);
    }
}
