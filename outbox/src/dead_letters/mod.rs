//! Dead letters: events a service's consumers can never apply, kept in the
//! service's own database with why, for an operator to list, read, send
//! back to their queue or purge (`outbox dead-letters`).
//!
//! Two ways in: a consumer records what it could not decode or apply,
//! with its own reason, before it acks the batch ([`record`]); and a
//! [`drain`] moves what the broker dead-lettered by itself (a message
//! delivered past the queue's delivery limit) out of the `*.dead-letter`
//! queues, with the broker's reason. An event dead-lettered again counts
//! up on its row. Listing is a query, and a requeue goes out through the
//! outbox ([`operate`]), to the event's own queue only, under its own id:
//! the consumer's inbox applies it at most once.

pub mod drain;
pub mod operate;

use deadpool_postgres::Pool;
use lapin::BasicProperties;
use uuid::Uuid;

use crate::Result;
use crate::envelope::{self, Envelope, Received};

/// Who dead-lettered a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A consumer found it undecodable or unappliable.
    Consumer,
    /// The broker gave up on it (delivery limit).
    Broker,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Consumer => "consumer",
            Source::Broker => "broker",
        }
    }
}

/// What the AMQP message itself said, beside its body: its own message
/// id (the sender's; the events packed in one message share it) and its
/// type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub transport_id: Option<String>,
    pub event_type: Option<String>,
}

impl Origin {
    pub fn of(properties: &BasicProperties) -> Self {
        Origin {
            transport_id: properties.message_id().as_ref().map(|id| id.to_string()),
            event_type: properties.kind().as_ref().map(|kind| kind.to_string()),
        }
    }
}

/// One dead letter as it is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The event's own id; `None` when the body is not an event.
    pub message_id: Option<Uuid>,
    /// The id of the AMQP message it came in, where the message itself was
    /// dead-lettered (a body that is not an event, a message the broker
    /// gave up on): what its sender logged. `None` for an event set aside
    /// by itself, which its own id names.
    pub transport_id: Option<String>,
    pub event_type: Option<String>,
    pub aggregate_id: Option<String>,
    /// The envelope as JSON, or the raw body.
    pub body: String,
    pub reason: String,
}

impl DeadLetter {
    /// An event that can never apply.
    pub fn of_event(envelope: &Envelope, reason: impl Into<String>) -> Self {
        let body = serde_json::to_string(envelope)
            .unwrap_or_else(|error| format!("(envelope not encodable: {error})"));
        DeadLetter {
            message_id: Some(envelope.id),
            transport_id: None,
            event_type: Some(envelope.event_type.clone()),
            aggregate_id: Some(envelope.aggregate_id.clone()),
            body,
            reason: reason.into(),
        }
    }

    /// A body that is not an event, with what its message's properties
    /// said.
    pub fn malformed(raw: String, reason: impl Into<String>, origin: &Origin) -> Self {
        DeadLetter {
            message_id: None,
            transport_id: origin.transport_id.clone(),
            event_type: origin.event_type.clone(),
            aggregate_id: None,
            body: raw,
            reason: reason.into(),
        }
    }

    /// One dead letter per element of a message body (a packed message
    /// holds several events), all for `reason` and all of `origin`.
    pub fn of_body(body: &[u8], reason: &str, origin: &Origin) -> Vec<Self> {
        envelope::decode(body)
            .into_iter()
            .map(|received| match received {
                Received::Event(envelope) => DeadLetter {
                    transport_id: origin.transport_id.clone(),
                    ..DeadLetter::of_event(&envelope, reason)
                },
                Received::Malformed { raw, reason: why } => {
                    DeadLetter::malformed(raw, format!("{reason} ({why})"), origin)
                }
            })
            .collect()
    }
}

/// An event dead-lettered again on the same queue counts up and takes the
/// newest reason; it is no longer "requeued".
const RECORD_SQL: &str = "\
    INSERT INTO dead_letters \
        (queue, message_id, event_type, aggregate_id, body, reason, source, transport_id) \
    SELECT $1, m, t, a, b, r, $7, x \
    FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $8::text[]) \
        AS d(m, t, a, b, r, x) \
    ON CONFLICT (queue, message_id) WHERE message_id IS NOT NULL DO UPDATE \
    SET count = dead_letters.count + 1, last_at = now(), reason = EXCLUDED.reason, \
        body = EXCLUDED.body, source = EXCLUDED.source, requeued_at = NULL, \
        transport_id = EXCLUDED.transport_id";

/// Records `letters` from `queue`, in one statement.
pub async fn record(
    pool: &Pool,
    queue: &str,
    letters: &[DeadLetter],
    source: Source,
) -> Result<()> {
    if letters.is_empty() {
        return Ok(());
    }
    // The same event twice in one statement cannot update its row twice:
    // keep the last of each id.
    let mut kept: Vec<&DeadLetter> = Vec::with_capacity(letters.len());
    for letter in letters {
        match kept
            .iter_mut()
            .find(|seen| seen.message_id.is_some() && seen.message_id == letter.message_id)
        {
            Some(seen) => *seen = letter,
            None => kept.push(letter),
        }
    }
    let ids: Vec<Option<Uuid>> = kept.iter().map(|l| l.message_id).collect();
    let types: Vec<Option<&str>> = kept.iter().map(|l| l.event_type.as_deref()).collect();
    let aggregates: Vec<Option<&str>> = kept.iter().map(|l| l.aggregate_id.as_deref()).collect();
    let bodies: Vec<&str> = kept.iter().map(|l| l.body.as_str()).collect();
    let reasons: Vec<&str> = kept.iter().map(|l| l.reason.as_str()).collect();
    let transport_ids: Vec<Option<&str>> = kept.iter().map(|l| l.transport_id.as_deref()).collect();
    let client = pool.get().await?;
    let statement = client.prepare_cached(RECORD_SQL).await?;
    client
        .execute(
            &statement,
            &[
                &queue,
                &ids,
                &types,
                &aggregates,
                &bodies,
                &reasons,
                &source.as_str(),
                &transport_ids,
            ],
        )
        .await?;
    Ok(())
}

/// Dead letters waiting for an operator (not requeued), by queue.
pub async fn waiting(client: &tokio_postgres::Client) -> Result<Vec<(String, i64)>> {
    let rows = client
        .query(
            "SELECT queue, count(*) FROM dead_letters WHERE requeued_at IS NULL \
             GROUP BY queue ORDER BY queue",
            &[],
        )
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_body_is_one_dead_letter_per_element() {
        let good = r#"{"id":"0192b3a0-0000-7000-8000-000000000001","type":"order.created","aggregate_id":"7","occurred_at":"2026-11-25T10:00:00Z","payload":{"x":1}}"#;
        let body = format!(r#"[{good}, {{"nope": 1}}]"#);
        let origin = Origin {
            transport_id: Some("batch-17".into()),
            event_type: Some("order.created".into()),
        };
        let letters = DeadLetter::of_body(body.as_bytes(), "delivery_limit", &origin);
        assert_eq!(letters.len(), 2);
        assert_eq!(letters[0].aggregate_id.as_deref(), Some("7"));
        assert_eq!(letters[0].reason, "delivery_limit");
        assert!(
            letters[0].body.contains(r#""payload":{"x":1}"#),
            "{}",
            letters[0].body
        );
        assert_eq!(letters[1].message_id, None);
        assert!(
            letters[1]
                .reason
                .starts_with("delivery_limit (not an event envelope"),
            "{}",
            letters[1].reason
        );
        assert_eq!(letters[1].event_type.as_deref(), Some("order.created"));
        assert!(
            letters
                .iter()
                .all(|letter| letter.transport_id.as_deref() == Some("batch-17"))
        );
    }
}
