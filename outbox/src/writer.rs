//! Appending events to the outbox inside the caller's transaction.
//!
//! The caller's state change and its events commit together or not at all:
//! that is the whole point of the outbox. A batch of events is one
//! multi-row statement (arrays through `unnest`), prepared once per
//! connection, whatever the batch size: run alone in the caller's
//! transaction ([`append`]), or embedded in the caller's own statement
//! ([`insert_sql`]), which is then the transaction.
//!
//! Once committed, the rows wake this process's relays: [`commit`] commits
//! and says so; a caller whose statement was the transaction calls
//! [`crate::relay::rows_committed`] itself.

use std::sync::LazyLock;

use deadpool_postgres::Transaction;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::Result;
use crate::schema::PARTITIONS;

/// One event to append.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Its message id: new for most events; an event that may be sent
    /// again later under the same id takes one it can rebuild
    /// ([`NewEvent::with_id`]).
    pub id: Uuid,
    pub aggregate_id: String,
    pub event_type: &'static str,
    /// The payload as JSON text.
    pub payload: String,
}

impl NewEvent {
    pub fn new(
        aggregate_id: impl ToString,
        event_type: &'static str,
        payload: &impl serde::Serialize,
    ) -> Result<Self> {
        Ok(NewEvent {
            id: Uuid::now_v7(),
            aggregate_id: aggregate_id.to_string(),
            event_type,
            payload: serde_json::to_string(payload)?,
        })
    }

    /// The same event under message id `id`.
    pub fn with_id(self, id: Uuid) -> Self {
        NewEvent { id, ..self }
    }
}

/// The outbox columns of a batch of events, one array each: one statement
/// inserts them all, alone ([`append`]) or inside a caller's own statement
/// ([`insert_sql`]).
pub struct EventColumns<'a> {
    /// The message ids, in the order of the events.
    pub ids: Vec<Uuid>,
    aggregates: Vec<&'a str>,
    partitions: Vec<i16>,
    types: Vec<&'a str>,
    payloads: Vec<&'a str>,
}

impl<'a> EventColumns<'a> {
    pub fn of(events: &'a [NewEvent]) -> Self {
        EventColumns {
            ids: events.iter().map(|e| e.id).collect(),
            aggregates: events.iter().map(|e| e.aggregate_id.as_str()).collect(),
            partitions: events
                .iter()
                .map(|e| partition_of(&e.aggregate_id))
                .collect(),
            types: events.iter().map(|e| e.event_type).collect(),
            payloads: events.iter().map(|e| e.payload.as_str()).collect(),
        }
    }

    /// The values of [`insert_sql`]'s five placeholders, in order.
    pub fn params(&self) -> [&(dyn ToSql + Sync); 5] {
        [
            &self.ids,
            &self.aggregates,
            &self.partitions,
            &self.types,
            &self.payloads,
        ]
    }
}

/// The insert of an [`EventColumns`], its five placeholders numbered from
/// `$first`. Its rows come from `unnest(…) AS e(message_id, aggregate_id,
/// partition, event_type, payload)`: a statement that embeds it (in a
/// `WITH`) may append a `WHERE` on `e`.
pub fn insert_sql(first: usize) -> String {
    let [ids, aggregates, partitions, types, payloads] = [0, 1, 2, 3, 4].map(|n| first + n);
    format!(
        "INSERT INTO outbox (message_id, aggregate_id, partition, event_type, payload) \
         SELECT message_id, aggregate_id, partition, event_type, payload::jsonb \
         FROM unnest(${ids}::uuid[], ${aggregates}::text[], ${partitions}::int2[], \
                     ${types}::text[], ${payloads}::text[]) \
             AS e(message_id, aggregate_id, partition, event_type, payload)"
    )
}

static APPEND_SQL: LazyLock<String> = LazyLock::new(|| insert_sql(1));

/// Appends `events` in the caller's open transaction and returns their
/// message ids, in order.
pub async fn append(tx: &Transaction<'_>, events: &[NewEvent]) -> Result<Vec<Uuid>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let columns = EventColumns::of(events);
    let statement = tx.prepare_cached(&APPEND_SQL).await?;
    tx.execute(&statement, &columns.params()).await?;
    Ok(columns.ids)
}

/// Commits a transaction that appended events, and wakes this process's
/// relays for them ([`crate::relay::wake`]).
pub async fn commit(tx: Transaction<'_>) -> Result<()> {
    tx.commit().await?;
    crate::relay::rows_committed();
    Ok(())
}

/// Sends `events` again under their own message ids, in the caller's
/// transaction: the outbox is append-only, so they are appended anew and
/// go out after whatever is waiting. Consumers see the same message id
/// (or the same effect) and apply it at most once. Returns how many rows
/// will go out again.
pub async fn resend(tx: &Transaction<'_>, events: &[NewEvent]) -> Result<u64> {
    Ok(append(tx, events).await?.len() as u64)
}

/// The partition of an aggregate: FNV-1a of its id, modulo [`PARTITIONS`].
/// Stable across processes and releases (rows already written keep theirs).
pub fn partition_of(aggregate_id: &str) -> i16 {
    let hash = aggregate_id
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    (hash % u64::from(PARTITIONS)) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        assert_eq!(partition_of("42"), partition_of("42"));
        let used: std::collections::HashSet<i16> =
            (0..1000).map(|id| partition_of(&id.to_string())).collect();
        assert_eq!(used.len(), PARTITIONS as usize);
        assert!(used.iter().all(|p| (0..PARTITIONS as i16).contains(p)));
    }
}
