//! The message envelope: one event as it travels, and how one or several
//! envelopes become an AMQP message and back.
//!
//! A message carries one envelope (the body is the envelope's JSON), or a
//! packed run of envelopes of one event type (the body is a JSON array,
//! header `x-event-count`). Consumers dedupe and dead-letter per envelope,
//! never per message, so packing changes throughput, not semantics.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use uuid::Uuid;

/// Header carrying the number of envelopes in a packed message.
pub const EVENT_COUNT_HEADER: &str = "x-event-count";
/// Header carrying why a message was dead-lettered.
pub const DEAD_LETTER_REASON_HEADER: &str = "x-dead-letter-reason";

/// One event: what happened to which aggregate, when.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// The message UUID: the outbox row's, and the inbox's dedupe key.
    pub id: Uuid,
    /// Event name, also the routing key (`order.created`).
    #[serde(rename = "type")]
    pub event_type: String,
    /// The order or product this event is about.
    pub aggregate_id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// The event data, kept as raw JSON until a handler decodes it.
    pub payload: Box<RawValue>,
}

impl Envelope {
    /// Decodes the payload into the handler's type.
    pub fn payload_as<'a, T: Deserialize<'a>>(&'a self) -> Result<T, serde_json::Error> {
        serde_json::from_str(self.payload.get())
    }
}

/// A message ready for `basic_publish`.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    pub routing_key: String,
    /// Sent to this queue alone, through the default exchange, instead of
    /// to the publisher's exchange under `routing_key`.
    pub queue: Option<String>,
    pub body: Vec<u8>,
    pub properties: BasicProperties,
    /// Envelopes inside, for accounting.
    pub event_count: usize,
}

/// Encodes envelopes of one event type as one message. `envelopes` must not
/// be empty.
pub fn encode(envelopes: &[Envelope]) -> Result<OutgoingMessage, serde_json::Error> {
    let first = &envelopes[0];
    let body = match envelopes {
        [single] => serde_json::to_vec(single)?,
        many => serde_json::to_vec(many)?,
    };
    let mut headers = FieldTable::default();
    headers.insert(
        ShortString::from(EVENT_COUNT_HEADER),
        AMQPValue::LongUInt(envelopes.len() as u32),
    );
    headers.insert(
        ShortString::from("aggregate_id"),
        AMQPValue::LongString(first.aggregate_id.as_str().into()),
    );
    let properties = BasicProperties::default()
        .with_message_id(first.id.to_string().into())
        .with_type(first.event_type.as_str().into())
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_timestamp(first.occurred_at.unix_timestamp().max(0) as u64)
        .with_headers(headers);
    Ok(OutgoingMessage {
        routing_key: first.event_type.clone(),
        queue: None,
        body,
        properties,
        event_count: envelopes.len(),
    })
}

/// One element of a received message: an envelope, or the raw text of an
/// element that is not one (it goes to the dead-letter queue).
#[derive(Debug)]
pub enum Received {
    Event(Envelope),
    Malformed { raw: String, reason: String },
}

/// Decodes a message body into its envelopes. A body that is not JSON at
/// all yields one `Malformed` element; in a packed array, each element is
/// decoded on its own so one bad element spoils only itself.
pub fn decode(body: &[u8]) -> Vec<Received> {
    let malformed = |reason: String| Received::Malformed {
        raw: String::from_utf8_lossy(body).into_owned(),
        reason,
    };
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        return match serde_json::from_slice::<Vec<Box<RawValue>>>(body) {
            Ok(elements) if elements.is_empty() => vec![malformed("empty event array".into())],
            Ok(elements) => elements.iter().map(|raw| decode_one(raw.get())).collect(),
            Err(error) => vec![malformed(format!("not a JSON array of events: {error}"))],
        };
    }
    match std::str::from_utf8(body) {
        Ok(text) => vec![decode_one(text)],
        Err(_) => vec![malformed("body is not UTF-8".into())],
    }
}

fn decode_one(text: &str) -> Received {
    match serde_json::from_str::<Envelope>(text) {
        Ok(envelope) => Received::Event(envelope),
        Err(error) => Received::Malformed {
            raw: text.to_owned(),
            reason: format!("not an event envelope: {error}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(event_type: &str, aggregate: &str) -> Envelope {
        Envelope {
            id: Uuid::now_v7(),
            event_type: event_type.into(),
            aggregate_id: aggregate.into(),
            occurred_at: OffsetDateTime::now_utc(),
            payload: RawValue::from_string(r#"{"quantity":2}"#.into()).unwrap(),
        }
    }

    #[test]
    fn a_single_envelope_travels_as_itself_with_its_properties() {
        let sent = envelope("order.created", "42");
        let message = encode(std::slice::from_ref(&sent)).unwrap();
        assert_eq!(message.routing_key, "order.created");
        assert_eq!(
            message
                .properties
                .message_id()
                .as_ref()
                .map(|id| id.as_str()),
            Some(sent.id.to_string().as_str())
        );
        assert_eq!(message.properties.delivery_mode(), &Some(2));
        let received = decode(&message.body);
        let [Received::Event(back)] = received.as_slice() else {
            panic!("expected one event, got {received:?}");
        };
        assert_eq!(back.id, sent.id);
        assert_eq!(back.payload.get(), r#"{"quantity":2}"#);
    }

    #[test]
    fn packed_envelopes_decode_one_by_one() {
        let sent = [
            envelope("order.created", "1"),
            envelope("order.created", "2"),
        ];
        let message = encode(&sent).unwrap();
        assert_eq!(message.event_count, 2);
        let ids: Vec<Uuid> = decode(&message.body)
            .into_iter()
            .map(|received| match received {
                Received::Event(envelope) => envelope.id,
                Received::Malformed { reason, .. } => panic!("{reason}"),
            })
            .collect();
        assert_eq!(ids, [sent[0].id, sent[1].id]);
    }

    #[test]
    fn a_bad_element_spoils_only_itself() {
        let good = serde_json::to_string(&envelope("order.created", "1")).unwrap();
        let body = format!(r#"[{good}, {{"id": "not-a-uuid"}}]"#);
        let received = decode(body.as_bytes());
        assert!(matches!(received[0], Received::Event(_)));
        assert!(
            matches!(&received[1], Received::Malformed { raw, .. } if raw.contains("not-a-uuid"))
        );
    }

    #[test]
    fn garbage_is_one_malformed_element() {
        for body in [&b"not json"[..], b"[1, 2", b"\xff\xfe", b"[]", b"{}"] {
            let received = decode(body);
            assert_eq!(received.len(), 1);
            assert!(
                matches!(received[0], Received::Malformed { .. }),
                "{body:?}"
            );
        }
    }
}
