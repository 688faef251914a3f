//! Dead letters an operator can work: listed with their reason, read in
//! full, requeued to their own queue (applied once), drained from the
//! broker's dead-letter queues, purged.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use outbox::dead_letters::drain::Drain;
use outbox::topology::Topology;

use crate::helpers::{POISON_ONCE, TestOutbox, amqp_url};
use crate::replay::outbox_command;

/// Runs `outbox dead-letters …` on this outbox; stdout, or a panic with
/// stderr when it fails.
fn dead_letters(outbox: &TestOutbox, args: &[&str]) -> String {
    let output = outbox_command(outbox)
        .arg("dead-letters")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{args:?}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The lines of `outbox actions`, newest first, without its header and
/// count.
fn recorded_actions(outbox: &TestOutbox) -> Vec<String> {
    let output = outbox_command(outbox).arg("actions").output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    lines[1..lines.len() - 1]
        .iter()
        .map(|line| line.to_string())
        .collect()
}

#[tokio::test]
async fn a_malformed_message_is_listed_with_its_reason_and_can_be_read_and_purged() {
    let outbox = TestOutbox::new().await;
    // The sender logged its message's own id: the operator finds it by that.
    outbox
        .publish_raw_with(
            b"{ not json at all",
            BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(ShortString::from("sender-42")),
        )
        .await;
    assert_eq!(outbox.consume_all().await.dead_lettered, 1);

    let listed = dead_letters(&outbox, &["list"]);
    let queue = outbox.topology.order_created_queue();
    let line = listed
        .lines()
        .find(|line| line.contains(&queue))
        .unwrap_or_else(|| panic!("not listed: {listed}"));
    assert!(line.contains("not an event envelope"), "{line}");
    let columns: Vec<&str> = line.split('\t').collect();
    assert_eq!((columns[2], columns[3]), ("-", "sender-42"), "{line}");
    let id = columns[0].to_owned();
    let shown = dead_letters(&outbox, &["show", &id]);
    assert!(shown.contains("{ not json at all"), "{shown}");
    assert!(shown.contains("amqp id:      sender-42"), "{shown}");
    assert!(shown.contains("by:           consumer"), "{shown}");

    // Not an event: a requeue leaves it; a requeue of all needs --yes (or
    // --dry-run), as a purge does.
    let unconfirmed = outbox_command(&outbox)
        .args(["dead-letters", "requeue", "--all"])
        .output()
        .unwrap();
    assert!(!unconfirmed.status.success());
    assert!(String::from_utf8_lossy(&unconfirmed.stderr).contains("add --yes"));
    let requeue = dead_letters(&outbox, &["requeue", "--all", "--yes"]);
    assert!(requeue.contains("not an event, left as it is"), "{requeue}");
    let refused = outbox_command(&outbox)
        .args(["dead-letters", "purge", "--id", &id])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert_eq!(outbox.dead_letters().await.len(), 1);
    let purged = dead_letters(&outbox, &["purge", "--id", &id, "--yes"]);
    assert!(purged.contains("purged 1 dead letters"), "{purged}");
    assert!(outbox.dead_letters().await.is_empty());
    // Only the purge changed something: it alone is on record.
    let actions = recorded_actions(&outbox);
    assert_eq!(actions.len(), 1, "{actions:?}");
    let purge: Vec<&str> = actions[0].split('\t').collect();
    assert_eq!(
        (purge[2], purge[3], purge[6]),
        ("purge", "1", format!("--id {id}").as_str())
    );
    assert_eq!(purge[4], "postgres", "the database role");
    assert!(purge[5].contains('@'), "the tool's account: {}", purge[5]);
    outbox.cleanup().await;
}

#[tokio::test]
async fn a_requeued_dead_letter_applies_exactly_once() {
    let outbox = TestOutbox::new().await;
    // Poison the first time only: a bug since fixed.
    outbox.append(&[("requeued".into(), POISON_ONCE + 7)]).await;
    let mut relay = outbox.relay(outbox.relay_config());
    assert_eq!(outbox.drain(&mut relay).await, 1);
    assert_eq!(outbox.consume_all().await.dead_lettered, 1);
    assert!(outbox.effects().await.is_empty());
    let letter = outbox.dead_letters().await.remove(0);
    assert_eq!(letter.reason, "poison the first time (test)");
    let id = letter.id.to_string();

    let dry = dead_letters(&outbox, &["requeue", "--id", &id, "--dry-run"]);
    assert!(dry.contains("would requeue 1 dead letters"), "{dry}");
    assert_eq!(
        outbox.drain(&mut relay).await,
        0,
        "a dry run sent something"
    );

    let requeued = dead_letters(&outbox, &["requeue", "--id", &id]);
    let actions = recorded_actions(&outbox);
    assert_eq!(actions.len(), 1, "the dry run is not recorded: {actions:?}");
    assert!(actions[0].contains("\trequeue\t1\t"), "{actions:?}");
    assert!(requeued.contains("requeued 1 dead letters"), "{requeued}");
    assert_eq!(outbox.drain(&mut relay).await, 1);
    let report = outbox.consume_all().await;
    assert_eq!((report.applied, report.dead_lettered), (1, 0), "{report:?}");
    assert_eq!(outbox.effects().await["requeued"], (POISON_ONCE + 7, 1));

    // Already requeued: nothing more to requeue. Sent again anyway (a
    // replay of its rows: the first one and the requeue's, both kept by
    // the append-only outbox), each is a duplicate.
    let again = dead_letters(&outbox, &["requeue", "--all", "--yes"]);
    assert!(again.contains("requeued 0 dead letters"), "{again}");
    let replayed = outbox_command(&outbox)
        .args(["replay", "--exchange", "orders", "--aggregate", "requeued"])
        .output()
        .unwrap();
    assert!(replayed.status.success());
    assert_eq!(outbox.consume_all().await.duplicates, 2);
    assert_eq!(outbox.effects().await["requeued"], (POISON_ONCE + 7, 1));
    let actions = recorded_actions(&outbox);
    assert_eq!(
        actions.len(),
        2,
        "a requeue of nothing is not recorded: {actions:?}"
    );
    let replay: Vec<&str> = actions[0].split('\t').collect();
    assert_eq!(
        (replay[2], replay[3]),
        ("replay", "2"),
        "newest first: {actions:?}"
    );
    assert!(
        replay[6].starts_with("--aggregate requeued to "),
        "{actions:?}"
    );
    let listed = dead_letters(&outbox, &["list"]);
    assert!(listed.contains("0 dead letters"), "{listed}");
    outbox.cleanup().await;
}

#[tokio::test]
async fn what_the_broker_dead_letters_is_drained_with_its_reason() {
    let outbox = TestOutbox::new().await;
    let queue = outbox.topology.order_created_queue();
    // As RabbitMQ dead-letters a message past the delivery limit.
    let connection = outbox::broker::connect(&amqp_url(), "test").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    let mut headers = FieldTable::default();
    headers.insert(
        ShortString::from("x-first-death-reason"),
        AMQPValue::LongString("delivery_limit".into()),
    );
    let event = outbox::envelope::encode(&[outbox::envelope::Envelope {
        id: uuid::Uuid::now_v7(),
        event_type: "order.created".into(),
        aggregate_id: "limit".into(),
        occurred_at: time::OffsetDateTime::now_utc(),
        payload: serde_json::value::RawValue::from_string(r#"{"amount": 1}"#.into()).unwrap(),
    }])
    .unwrap();
    channel
        .basic_publish(
            outbox.topology.dead_letter_exchange().as_str().into(),
            queue.as_str().into(),
            Default::default(),
            &event.body,
            BasicProperties::default().with_headers(headers),
        )
        .await
        .unwrap()
        .await
        .unwrap();

    let drain = Drain {
        pool: outbox.pool.clone(),
        amqp_url: outbox::broker::BrokerUrl::new(&amqp_url()),
        topology: outbox.topology.clone(),
        queues: vec![queue.clone()],
        gauge: outbox::metrics::ConsumerMetrics::unregistered().dead_letters,
    };
    let (_drain_connection, drain_channel) = drain.connect().await.unwrap();
    assert_eq!(drain.drain_once(&drain_channel).await.unwrap(), 1);
    assert_eq!(drain.gauge.with_label_values(&[&queue]).get(), 1);
    let letters = outbox.dead_letters().await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].aggregate_id.as_deref(), Some("limit"));
    assert_eq!(letters[0].source, "broker");
    assert!(
        letters[0].reason.contains("delivery_limit"),
        "{}",
        letters[0].reason
    );
    let (_, left) = channel
        .queue_declare(
            Topology::dead_letter_queue(&queue).as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map(|queue| ((), queue.message_count()))
        .unwrap();
    assert_eq!(
        left, 0,
        "the drained message is still in the dead-letter queue"
    );
    connection.close(200, "done".into()).await.unwrap();
    outbox.cleanup().await;
}
