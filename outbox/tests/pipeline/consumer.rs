//! The inbox consumer: duplicates apply once, poison becomes a dead letter
//! with its reason and blocks nothing; a broker that sits on the
//! subscription is left for a new connection.

use std::time::Duration;

use outbox::broker::BrokerUrl;
use outbox::envelope::{self, Envelope};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::helpers::{BROKEN_DEPLOY, OUTAGE, TestOutbox, amqp_url};

fn envelope(aggregate: &str, payload: &str) -> Envelope {
    Envelope {
        id: Uuid::now_v7(),
        event_type: "order.created".into(),
        aggregate_id: aggregate.into(),
        occurred_at: OffsetDateTime::now_utc(),
        payload: RawValue::from_string(payload.into()).unwrap(),
    }
}

fn body(envelopes: &[Envelope]) -> Vec<u8> {
    envelope::encode(envelopes).unwrap().body
}

#[tokio::test]
async fn the_same_message_delivered_three_times_applies_once() {
    let outbox = TestOutbox::new().await;
    let once = envelope("a", r#"{"amount": 5}"#);
    for _ in 0..3 {
        outbox.publish_raw(&body(std::slice::from_ref(&once))).await;
    }
    let report = outbox.consume_all().await;
    assert_eq!((report.applied, report.duplicates), (1, 2), "{report:?}");
    assert_eq!(outbox.effects().await["a"], (5, 1));
    // Later, in another batch and session, it is still a duplicate.
    outbox.publish_raw(&body(&[once])).await;
    assert_eq!(outbox.consume_all().await.duplicates, 1);
    assert_eq!(outbox.effects().await["a"], (5, 1));
    outbox.cleanup().await;
}

#[tokio::test]
async fn poison_messages_become_dead_letters_and_the_rest_apply() {
    let outbox = TestOutbox::new().await;
    outbox
        .publish_raw(&body(&[envelope("a", r#"{"amount": 1}"#)]))
        .await;
    outbox.publish_raw(b"this is not json").await;
    outbox
        .publish_raw(&body(&[envelope("b", r#"{"wrong": "shape"}"#)]))
        .await;
    outbox
        .publish_raw(&body(&[
            envelope("c", r#"{"amount": -3}"#),
            envelope("d", r#"{"amount": 4}"#),
        ]))
        .await;
    outbox
        .publish_raw(br#"{"id": "not-a-uuid", "type": "order.created"}"#)
        .await;
    outbox
        .publish_raw(&body(&[envelope("e", r#"{"amount": 2}"#)]))
        .await;

    let report = outbox.consume_all().await;
    assert_eq!((report.applied, report.dead_lettered), (3, 4), "{report:?}");
    let effects = outbox.effects().await;
    assert_eq!(effects.len(), 3);
    assert_eq!((effects["a"].0, effects["d"].0, effects["e"].0), (1, 4, 2));

    let dead = outbox.dead_letters().await;
    assert!(
        dead.iter().all(
            |letter| letter.queue == outbox.topology.order_created_queue()
                && letter.source == "consumer"
        ),
        "{dead:?}"
    );
    let reasons: Vec<&str> = dead.iter().map(|letter| letter.reason.as_str()).collect();
    assert_eq!(dead.len(), 4, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("negative amount")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("payload")), "{reasons:?}");
    assert!(
        reasons
            .iter()
            .filter(|r| r.contains("not an event envelope"))
            .count()
            == 2,
        "{reasons:?}"
    );
    assert!(dead.iter().any(|letter| letter.body == "this is not json"));
    outbox.cleanup().await;
}

#[tokio::test]
async fn a_batch_the_store_cannot_take_now_is_retried_in_place_not_dead_lettered() {
    let outbox = TestOutbox::new().await;
    // One message: a good event, one that meets a store outage three times,
    // one that meets a broken deploy (a missing column) twice.
    outbox
        .publish_raw(&body(&[
            envelope("a", r#"{"amount": 5}"#),
            envelope("b", &format!(r#"{{"amount": {}}}"#, OUTAGE + 3)),
            envelope("c", &format!(r#"{{"amount": {}}}"#, BROKEN_DEPLOY + 2)),
        ]))
        .await;
    // consume_all fails the test if a step gives the batch back to the
    // broker (an error); a redelivery would also count deliveries twice.
    let report = outbox.consume_all().await;
    assert_eq!(
        (report.deliveries, report.applied, report.dead_lettered),
        (1, 3, 0),
        "{report:?}"
    );
    let effects = outbox.effects().await;
    assert_eq!(effects["a"], (5, 1));
    assert_eq!(effects["b"], (OUTAGE + 3, 1));
    assert_eq!(effects["c"], (BROKEN_DEPLOY + 2, 1));
    outbox.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_sits_on_the_subscription_is_left_for_a_new_connection() {
    let outbox = TestOutbox::new().await;
    outbox
        .publish_raw(&body(&[envelope("a", r#"{"amount": 7}"#)]))
        .await;
    // The consumer's first connection finishes the handshake (Start, Tune,
    // Open-Ok), then never hears back: its channel is never opened, as
    // with a broker restarting that accepts connections before it serves.
    let proxy = testkit::Proxy::start(testkit::server_addr(&amqp_url())).await;
    proxy.silence_next_after_frames(3);
    let mut config = outbox.consumer_config();
    config.amqp_url = BrokerUrl::new(&proxy.amqp_url());
    config.setup_timeout = Duration::from_millis(500);
    let stop = platform::shutdown::Signal::new();
    let running = tokio::spawn(outbox.consumer_with(config).run(stop.clone()));
    let mut applied = None;
    for _ in 0..100 {
        applied = outbox.effects().await.get("a").copied();
        if applied.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    running.await.unwrap();
    assert_eq!(
        applied,
        Some((7, 1)),
        "the consumer stayed on the silent connection ({} connections)",
        proxy.connections()
    );
    assert!(proxy.connections() >= 2, "{}", proxy.connections());
    outbox.cleanup().await;
}
