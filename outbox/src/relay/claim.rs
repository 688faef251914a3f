//! The relay's SQL: claiming a batch, marking it sent, recording refusals.
//!
//! A batch transaction first locks whole partitions (rows of
//! `outbox_partition`, `SKIP LOCKED`), then reads the oldest unsent rows of
//! those partitions. Another relay skips the locked partitions and takes
//! others, so two relays never send events of one aggregate at once and
//! each partition leaves in id order. Rows are chosen by their unsent
//! state, never by "id above the last one seen", so a transaction that
//! commits late is picked up by the next batch instead of being skipped.

use std::sync::LazyLock;

use deadpool_postgres::Transaction;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::Result;

/// A row as the relay reads it.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub message_id: Uuid,
    pub aggregate_id: String,
    pub event_type: String,
    pub payload: String,
    pub created_at: OffsetDateTime,
    pub attempts: i32,
    /// The one queue it is for (a requeued dead letter), if any.
    pub queue: Option<String>,
}

/// The columns every reader of outbox rows selects, in [`OutboxRow::from_row`]'s order.
pub(crate) const ROW_COLUMNS: &str = "o.id, o.message_id, o.aggregate_id, o.event_type, \
     o.payload::text, o.created_at, o.attempts, o.queue";

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
            attempts: row.try_get(6)?,
            queue: row.try_get(7)?,
        })
    }
}

/// `$1`: partitions to lock at most; `$2`: rows to take at most.
/// Only partitions with something to send are locked (the `EXISTS` probe
/// uses the partial pending index); their order is random so that no
/// partition starves when a relay takes fewer than all of them.
pub(crate) static CLAIM_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH claimed AS ( \
             SELECT p.partition FROM outbox_partition p \
             WHERE EXISTS ( \
                 SELECT 1 FROM outbox o \
                 WHERE o.partition = p.partition \
                   AND o.published_at IS NULL AND o.set_aside_at IS NULL) \
             ORDER BY random() \
             LIMIT $1 \
             FOR UPDATE SKIP LOCKED) \
         SELECT {ROW_COLUMNS} \
         FROM outbox o \
         WHERE o.partition IN (SELECT partition FROM claimed) \
           AND o.published_at IS NULL AND o.set_aside_at IS NULL \
         ORDER BY o.id \
         LIMIT $2 \
         FOR UPDATE OF o SKIP LOCKED"
    )
});

pub(crate) const MARK_PUBLISHED_SQL: &str =
    "UPDATE outbox SET published_at = now(), last_error = NULL WHERE id = ANY($1)";

/// Counts a refusal; a row refused `$3` times is set aside.
pub(crate) const RECORD_REFUSAL_SQL: &str = "\
    UPDATE outbox SET attempts = attempts + 1, last_error = r.reason, \
        set_aside_at = CASE WHEN attempts + 1 >= $3 THEN now() END \
    FROM unnest($1::bigint[], $2::text[]) AS r(id, reason) \
    WHERE outbox.id = r.id \
    RETURNING outbox.id, outbox.set_aside_at IS NOT NULL, outbox.attempts, outbox.event_type, r.reason";

/// Claims up to `max_rows` unsent rows of up to `max_partitions` partitions.
pub async fn claim(
    tx: &Transaction<'_>,
    max_partitions: i64,
    max_rows: i64,
) -> Result<Vec<OutboxRow>> {
    let statement = tx.prepare_cached(&CLAIM_SQL).await?;
    let rows = tx.query(&statement, &[&max_partitions, &max_rows]).await?;
    rows.iter().map(OutboxRow::from_row).collect()
}

/// Marks rows confirmed by the broker as published.
pub(crate) async fn mark_published(tx: &Transaction<'_>, ids: &[i64]) -> Result<u64> {
    if ids.is_empty() {
        return Ok(0);
    }
    let statement = tx.prepare_cached(MARK_PUBLISHED_SQL).await?;
    Ok(tx.execute(&statement, &[&ids]).await?)
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
