//! Envelope encoding: outbox rows becoming AMQP messages (one event per
//! message, and 50 packed), and a packed message decoded back per event.
//! The relay and every consumer pay this per event.

use criterion::{Criterion, criterion_group, criterion_main};
use outbox::envelope::{self, Envelope};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use uuid::Uuid;

fn event() -> Envelope {
    Envelope {
        id: Uuid::now_v7(),
        event_type: "order.created".into(),
        aggregate_id: Uuid::now_v7().to_string(),
        occurred_at: OffsetDateTime::now_utc(),
        payload: RawValue::from_string(format!(
            r#"{{"order_id":"{}","items":[{{"product_id":42,"quantity":2}}]}}"#,
            Uuid::now_v7()
        ))
        .unwrap(),
    }
}

fn encoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope");
    let one = [event()];
    let fifty: Vec<Envelope> = (0..50).map(|_| event()).collect();
    group.bench_function("encode 1 event as a message", |b| {
        b.iter(|| envelope::encode(&one).unwrap())
    });
    group.bench_function("encode 50 events as one packed message", |b| {
        b.iter(|| envelope::encode(&fifty).unwrap())
    });
    let packed = envelope::encode(&fifty).unwrap().body;
    group.bench_function("decode a packed message of 50 events", |b| {
        b.iter(|| envelope::decode(&packed))
    });
    group.finish();
}

criterion_group!(benches, encoding);
criterion_main!(benches);
