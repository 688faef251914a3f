//! Packing outbox rows into AMQP messages: consecutive rows of one event
//! type share a message, up to a count and a byte size; a row too large
//! for any message is set apart with its reason.

use serde_json::value::RawValue;

use super::OutboxRow;
use crate::envelope::{self, Envelope, OutgoingMessage};

/// Rows bound for one message.
pub(crate) struct Group {
    pub(crate) envelopes: Vec<Envelope>,
    pub(crate) row_ids: Vec<i64>,
    /// The one queue its rows are for, if any.
    pub(crate) queue: Option<String>,
}

impl Group {
    /// The message that carries it.
    pub(crate) fn message(&self) -> Result<OutgoingMessage, serde_json::Error> {
        let mut message = envelope::encode(&self.envelopes)?;
        message.queue = self.queue.clone();
        Ok(message)
    }

    /// The same rows, one per message.
    pub(crate) fn unpacked(self) -> impl Iterator<Item = Group> {
        let queue = self.queue;
        self.envelopes
            .into_iter()
            .zip(self.row_ids)
            .map(move |(envelope, id)| Group {
                envelopes: vec![envelope],
                row_ids: vec![id],
                queue: queue.clone(),
            })
    }
}

/// Packs consecutive rows of one event type and destination into groups of at most
/// `per_message` envelopes and `max_bytes` of payload. Rows whose payload
/// alone is over `max_bytes` come back separately, with the reason.
pub(crate) fn pack(
    rows: &[OutboxRow],
    per_message: usize,
    max_bytes: usize,
) -> (Vec<Group>, Vec<(i64, String)>) {
    let mut groups: Vec<Group> = Vec::new();
    let mut oversized = Vec::new();
    let mut group_bytes = 0;
    for row in rows {
        if row.payload.len() > max_bytes {
            oversized.push((
                row.id,
                format!(
                    "payload of {} bytes is over the {max_bytes}-byte message limit",
                    row.payload.len()
                ),
            ));
            continue;
        }
        let Some(envelope) = to_envelope(row) else {
            oversized.push((row.id, "payload is not valid JSON".to_owned()));
            continue;
        };
        let joins_last = groups.last().is_some_and(|group| {
            group.envelopes.len() < per_message
                && group.envelopes[0].event_type == row.event_type
                && group.queue == row.queue
                && group_bytes + row.payload.len() <= max_bytes
        });
        match groups.last_mut() {
            Some(group) if joins_last => {
                group.envelopes.push(envelope);
                group.row_ids.push(row.id);
                group_bytes += row.payload.len();
            }
            _ => {
                groups.push(Group {
                    envelopes: vec![envelope],
                    row_ids: vec![row.id],
                    queue: row.queue.clone(),
                });
                group_bytes = row.payload.len();
            }
        }
    }
    (groups, oversized)
}

fn to_envelope(row: &OutboxRow) -> Option<Envelope> {
    Some(Envelope {
        id: row.message_id,
        event_type: row.event_type.clone(),
        aggregate_id: row.aggregate_id.clone(),
        occurred_at: row.created_at,
        payload: RawValue::from_string(row.payload.clone()).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::OffsetDateTime;
    use uuid::Uuid;

    fn row(id: i64, event_type: &str, payload: &str) -> OutboxRow {
        OutboxRow {
            id,
            message_id: Uuid::now_v7(),
            aggregate_id: id.to_string(),
            event_type: event_type.into(),
            payload: payload.into(),
            created_at: OffsetDateTime::now_utc(),
            queue: None,
        }
    }

    fn shape(groups: &[Group]) -> Vec<Vec<i64>> {
        groups.iter().map(|group| group.row_ids.clone()).collect()
    }

    #[test]
    fn packing_keeps_row_order_and_splits_on_type_and_count() {
        let rows = [
            row(1, "a", "{}"),
            row(2, "a", "{}"),
            row(3, "a", "{}"),
            row(4, "b", "{}"),
            row(5, "a", "{}"),
        ];
        let (groups, oversized) = pack(&rows, 2, 1024);
        assert_eq!(shape(&groups), [vec![1, 2], vec![3], vec![4], vec![5]]);
        assert!(oversized.is_empty());
    }

    #[test]
    fn one_event_per_message_when_packing_is_off() {
        let rows = [row(1, "a", "{}"), row(2, "a", "{}")];
        let (groups, _) = pack(&rows, 1, 1024);
        assert_eq!(shape(&groups), [vec![1], vec![2]]);
    }

    #[test]
    fn oversized_rows_are_set_apart_and_byte_limits_split_groups() {
        let big = format!("{{\"x\":\"{}\"}}", "y".repeat(100));
        let rows = [
            row(1, "a", "{\"k\":1}"),
            row(2, "a", &big),
            row(3, "a", "{\"k\":3}"),
            row(4, "a", "{\"k\":4}"),
        ];
        let (groups, oversized) = pack(&rows, 10, 16);
        assert_eq!(shape(&groups), [vec![1, 3], vec![4]]);
        assert_eq!(oversized.len(), 1);
        assert_eq!(oversized[0].0, 2);
    }
}
