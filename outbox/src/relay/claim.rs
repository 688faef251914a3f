//! The relay's SQL: claiming a batch, moving the cursor past it, recording
//! refusals.
//!
//! The outbox is append-only; how far the relay got is kept per claim
//! partition (`outbox_partition`): every row with an id up to
//! `released_id` has been sent, except rows of transactions that were
//! still running in `released_snapshot`. A batch transaction first locks
//! whole claim partitions (`SKIP LOCKED`: another relay takes others, so two
//! relays never send events of one aggregate at once), then reads in one
//! statement, under one snapshot:
//! - new rows: id above the partition's `released_id`, in id order, up to
//!   the batch size (the `outbox_by_id` index, from the lowest cursor);
//! - late rows: committed by a transaction `released_snapshot` saw running
//!   (`outbox_by_xid`): it took its ids before the cursor moved past them,
//!   and committed after;
//! - refused rows due for another attempt (`outbox_refused`).
//!
//! After the broker confirmed, the cursor becomes (the statement's
//! snapshot, the largest new id read). A row the statement could not see
//! yet either has a larger id or belongs to a transaction running in that
//! snapshot, so it is read later, never skipped, however late it commits.
//! Within an aggregate, ids follow commit order (its writers serialise on
//! its row), and a snapshot that sees an event sees the ones before it, so
//! a partition's events leave in order.

use std::sync::LazyLock;

use deadpool_postgres::Transaction;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::Result;
use crate::schema::PARTITIONS;

/// A row as the relay reads it.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub message_id: Uuid,
    pub aggregate_id: String,
    pub event_type: String,
    pub payload: String,
    pub created_at: OffsetDateTime,
    /// The one queue it is for (a requeued dead letter), if any.
    pub queue: Option<String>,
}

/// The columns every reader of outbox rows selects, in [`OutboxRow::from_row`]'s order.
pub(crate) const ROW_COLUMNS: &str =
    "o.id, o.message_id, o.aggregate_id, o.event_type, o.payload::text, o.created_at, o.queue";

impl OutboxRow {
    /// A row selected with [`ROW_COLUMNS`].
    pub(crate) fn from_row(row: &tokio_postgres::Row) -> Result<Self> {
        Ok(OutboxRow {
            id: row.try_get(0)?,
            message_id: row.try_get(1)?,
            aggregate_id: row.try_get(2)?,
            event_type: row.try_get(3)?,
            payload: row.try_get(4)?,
            created_at: row.try_get(5)?,
            queue: row.try_get(6)?,
        })
    }
}

/// Locks up to `$1` claim partitions, in random order so that none starves
/// when a relay takes fewer than all; returns each one's `released_id`.
const LOCK_PARTITIONS_SQL: &str = "\
    SELECT partition, released_id FROM outbox_partition \
    ORDER BY random() LIMIT $1 FOR UPDATE SKIP LOCKED";

/// `$1`: the claimed partitions; `$2`: `released_id` by partition (index
/// `partition + 1`); `$3`: new rows at most, and refused rows at most.
/// Each row comes with its source and the statement's snapshot.
static READ_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH c AS (SELECT partition, released_snapshot, released_id \
                    FROM outbox_partition WHERE partition = ANY($1)), \
         fresh AS ( \
             SELECT {ROW_COLUMNS}, 'fresh' AS source FROM outbox o \
             WHERE o.id > (SELECT min(released_id) FROM c) \
               AND o.partition = ANY($1) AND o.id > ($2::int8[])[o.partition + 1] \
             ORDER BY o.id LIMIT $3), \
         late AS ( \
             SELECT {ROW_COLUMNS}, 'late' AS source FROM outbox o JOIN c ON c.partition = o.partition \
             WHERE o.xid = ANY (ARRAY(SELECT pg_snapshot_xip(released_snapshot) FROM c)) \
               AND o.id <= c.released_id \
               AND o.xid IN (SELECT pg_snapshot_xip(c.released_snapshot))), \
         retry AS ( \
             SELECT {ROW_COLUMNS}, 'retry' AS source FROM outbox_refused o \
             WHERE o.set_aside_at IS NULL AND o.partition = ANY($1) \
             ORDER BY o.id LIMIT $3) \
         SELECT *, pg_current_snapshot()::text FROM ( \
             SELECT * FROM fresh UNION ALL SELECT * FROM late UNION ALL SELECT * FROM retry) b \
         ORDER BY id"
    )
});

/// Moves the cursor of the claimed partitions `$1`: the read's snapshot
/// `$2`, and the largest new id it read `$3`.
const ADVANCE_SQL: &str = "\
    UPDATE outbox_partition \
    SET released_snapshot = $2::text::pg_snapshot, released_id = GREATEST(released_id, $3) \
    WHERE partition = ANY($1)";

/// Counts a refusal of each row `$1` (with its reason `$2`): a first
/// refusal copies the row into `outbox_refused`, a later one counts up; a
/// row refused `$3` times is set aside.
const RECORD_REFUSAL_SQL: &str = "\
    WITH r AS (SELECT * FROM unnest($1::int8[], $2::text[]) AS r(id, reason)), \
    again AS ( \
        UPDATE outbox_refused f SET attempts = f.attempts + 1, last_error = r.reason, \
            set_aside_at = CASE WHEN f.attempts + 1 >= $3 THEN now() END \
        FROM r WHERE f.id = r.id \
        RETURNING f.id, f.set_aside_at IS NOT NULL, f.attempts, f.event_type, r.reason), \
    first AS ( \
        INSERT INTO outbox_refused (id, message_id, aggregate_id, partition, event_type, \
            payload, created_at, queue, attempts, last_error, set_aside_at) \
        SELECT o.id, o.message_id, o.aggregate_id, o.partition, o.event_type, o.payload, \
            o.created_at, o.queue, 1, r.reason, CASE WHEN 1 >= $3 THEN now() END \
        FROM r JOIN outbox o ON o.id = r.id \
        WHERE NOT EXISTS (SELECT 1 FROM outbox_refused f WHERE f.id = r.id) \
        RETURNING id, set_aside_at IS NOT NULL, attempts, event_type, last_error) \
    SELECT * FROM again UNION ALL SELECT * FROM first";

/// Refused rows the broker took this time: they are sent.
const FORGET_REFUSALS_SQL: &str =
    "DELETE FROM outbox_refused WHERE id = ANY($1) AND set_aside_at IS NULL";

/// What one claim read.
#[derive(Debug, Default)]
pub struct Claim {
    /// Every row to send, in id order.
    pub rows: Vec<OutboxRow>,
    /// Of those, the ids read from `outbox_refused` (another attempt).
    pub(crate) retries: Vec<i64>,
    /// Where the cursor of the claimed partitions goes once the batch is
    /// confirmed.
    pub(crate) advance: Option<Advance>,
}

/// A cursor position to write.
#[derive(Debug)]
pub(crate) struct Advance {
    partitions: Vec<i16>,
    snapshot: String,
    released_id: i64,
}

/// Locks up to `max_partitions` claim partitions and reads what they have
/// to send: up to `max_rows` new rows, every late row, up to `max_rows`
/// refused rows due again.
pub async fn claim(tx: &Transaction<'_>, max_partitions: i64, max_rows: i64) -> Result<Claim> {
    let lock = tx.prepare_cached(LOCK_PARTITIONS_SQL).await?;
    let mut released = vec![i64::MAX; usize::from(PARTITIONS)];
    let mut partitions = Vec::new();
    for row in tx.query(&lock, &[&max_partitions]).await? {
        let (partition, released_id): (i16, i64) = (row.try_get(0)?, row.try_get(1)?);
        released[partition as usize] = released_id;
        partitions.push(partition);
    }
    if partitions.is_empty() {
        return Ok(Claim::default());
    }
    let read = tx.prepare_cached(&READ_SQL).await?;
    let rows = tx
        .query(&read, &[&partitions, &released, &max_rows])
        .await?;
    let mut claim = Claim::default();
    let mut largest_new = 0;
    for row in &rows {
        let outbox_row = OutboxRow::from_row(row)?;
        match row.try_get::<_, &str>(7)? {
            "retry" => claim.retries.push(outbox_row.id),
            "fresh" => largest_new = largest_new.max(outbox_row.id),
            _ => {}
        }
        claim.rows.push(outbox_row);
    }
    if let Some(first) = rows.first() {
        claim.advance = Some(Advance {
            partitions,
            snapshot: first.try_get(8)?,
            released_id: largest_new,
        });
    }
    Ok(claim)
}

/// Moves the claimed partitions' cursor past what the claim read.
pub(crate) async fn advance(tx: &Transaction<'_>, advance: &Advance) -> Result<()> {
    let statement = tx.prepare_cached(ADVANCE_SQL).await?;
    tx.execute(
        &statement,
        &[&advance.partitions, &advance.snapshot, &advance.released_id],
    )
    .await?;
    Ok(())
}

/// Forgets the refusals of rows the broker took on another attempt.
pub(crate) async fn forget_refusals(tx: &Transaction<'_>, ids: &[i64]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let statement = tx.prepare_cached(FORGET_REFUSALS_SQL).await?;
    tx.execute(&statement, &[&ids]).await?;
    Ok(())
}

/// Records refusals; returns how many rows were set aside by this call.
pub(crate) async fn record_refusals(
    tx: &Transaction<'_>,
    refused: &[(i64, String)],
    max_attempts: i32,
) -> Result<usize> {
    if refused.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = refused.iter().map(|(id, _)| *id).collect();
    let reasons: Vec<&str> = refused.iter().map(|(_, reason)| reason.as_str()).collect();
    let statement = tx.prepare_cached(RECORD_REFUSAL_SQL).await?;
    let rows = tx
        .query(&statement, &[&ids, &reasons, &max_attempts])
        .await?;
    let mut set_aside = 0;
    for row in rows {
        let (id, aside, attempts, event_type, reason): (i64, bool, i32, String, String) = (
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
            row.try_get(4)?,
        );
        if aside {
            set_aside += 1;
            tracing::warn!(outbox_id = id, %event_type, attempts, %reason, "outbox row refused by the broker and set aside; `outbox replay --from-id {id} --to-id {id}` once fixed");
        } else {
            tracing::warn!(outbox_id = id, %event_type, attempts, max_attempts, %reason, "outbox row refused by the broker while its neighbours passed");
        }
    }
    Ok(set_aside)
}
