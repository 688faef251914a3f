//! Appending events to the outbox inside the caller's transaction.
//!
//! The caller's state change and its events commit together or not at all:
//! that is the whole point of the outbox. A batch of events is one
//! multi-row statement (arrays through `unnest`), prepared once per
//! connection, whatever the batch size.

use deadpool_postgres::Transaction;
use uuid::Uuid;

use crate::Result;
use crate::schema::PARTITIONS;

/// One event to append.
#[derive(Debug, Clone)]
pub struct NewEvent {
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
            aggregate_id: aggregate_id.to_string(),
            event_type,
            payload: serde_json::to_string(payload)?,
        })
    }
}

/// Inserts any number of events in one statement.
pub const APPEND_SQL: &str = "\
    INSERT INTO outbox (message_id, aggregate_id, partition, event_type, payload) \
    SELECT message_id, aggregate_id, partition, event_type, payload::jsonb \
    FROM unnest($1::uuid[], $2::text[], $3::int2[], $4::text[], $5::text[]) \
        AS e(message_id, aggregate_id, partition, event_type, payload)";

/// Appends `events` in the caller's open transaction and returns their
/// message ids, in order.
pub async fn append(tx: &Transaction<'_>, events: &[NewEvent]) -> Result<Vec<Uuid>> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = events.iter().map(|_| Uuid::now_v7()).collect();
    let aggregates: Vec<&str> = events.iter().map(|e| e.aggregate_id.as_str()).collect();
    let partitions: Vec<i16> = events
        .iter()
        .map(|e| partition_of(&e.aggregate_id))
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type).collect();
    let payloads: Vec<&str> = events.iter().map(|e| e.payload.as_str()).collect();
    let statement = tx.prepare_cached(APPEND_SQL).await?;
    tx.execute(
        &statement,
        &[&ids, &aggregates, &partitions, &types, &payloads],
    )
    .await?;
    Ok(ids)
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
