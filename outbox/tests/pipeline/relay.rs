//! The relay: everything committed is published once, in order per
//! aggregate, even with two relays, a broken connection, or a crash
//! between publishing and marking.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use outbox::metrics::RelayMetrics;
use outbox::relay::{Outcome, Relay, RelayConfig};

use crate::helpers::{TestOutbox, amqp_url, new_events, within};
use testkit::Proxy;

fn events(aggregates: usize, per_aggregate: usize) -> Vec<(String, i64)> {
    (0..per_aggregate)
        .flat_map(|seq| {
            (0..aggregates).map(move |aggregate| (format!("agg-{aggregate}"), seq as i64))
        })
        .collect()
}

/// Asserts that, per aggregate, amounts (the sequence numbers) arrived in
/// increasing order, and returns the number of distinct events.
fn assert_in_order_per_aggregate(events: &[outbox::envelope::Envelope]) -> usize {
    let mut last: HashMap<&str, i64> = HashMap::new();
    let mut distinct = HashSet::new();
    for event in events {
        if !distinct.insert(event.id) {
            continue;
        }
        let amount: serde_json::Value = serde_json::from_str(event.payload.get()).unwrap();
        let amount = amount["amount"].as_i64().unwrap();
        let previous = last.insert(&event.aggregate_id, amount);
        assert!(
            previous.is_none_or(|previous| previous < amount),
            "{} went from {previous:?} to {amount}",
            event.aggregate_id
        );
    }
    distinct.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_publish_every_row_once_in_order_per_aggregate() {
    two_relays_publish_every_row_once(8).await;
}

/// Two relays each allowed every partition (each process left at its
/// default): whichever locks a partition first sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_each_allowed_every_partition_publish_every_row_once_in_order() {
    two_relays_publish_every_row_once(16).await;
}

async fn two_relays_publish_every_row_once(claim_partitions: i64) {
    let outbox = TestOutbox::new().await;
    let all = events(100, 100);
    for chunk in all.chunks(500) {
        outbox.append(chunk).await;
    }
    let stop = platform::shutdown::Signal::new();
    let mut handles = Vec::new();
    for _ in 0..2 {
        let config = RelayConfig {
            batch_size: 300,
            claim_partitions,
            ..outbox.relay_config()
        };
        let relay = outbox.relay(config);
        handles.push(tokio::spawn(relay.run(stop.clone())));
    }
    let received = outbox
        .take_events(&outbox.topology.order_created_queue(), all.len())
        .await;
    stop.cancel();
    for handle in handles {
        handle.await.unwrap();
    }
    assert_eq!(
        received.len(),
        all.len(),
        "duplicates or losses on a clean run"
    );
    assert_eq!(assert_in_order_per_aggregate(&received), all.len());
    assert_eq!(outbox.count("SELECT count(*) FROM outbox_pending").await, 0);
    outbox.cleanup().await;
}

/// A relay allowed every partition takes all it can without probing them
/// first, and so skips the partitions another relay holds, whatever they
/// have to send: their rows wait for that relay.
#[tokio::test]
async fn a_relay_allowed_every_partition_reads_none_of_a_partition_another_holds() {
    let outbox = TestOutbox::new().await;
    let all = events(40, 1);
    outbox.append(&all).await;
    // Another relay, allowed one partition, holds it for its batch.
    let mut other = outbox.pool.get().await.unwrap();
    let other_tx = other.transaction().await.unwrap();
    let other_claim = outbox::relay::claim(&other_tx, 1, 100).await.unwrap();
    let held = outbox::writer::partition_of(&other_claim.rows[0].aggregate_id);
    let mut client = outbox.pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let claim = outbox::relay::claim(&tx, 16, 100).await.unwrap();
    assert!(other_claim.rows.len() < all.len());
    assert_eq!(
        claim.rows.len(),
        all.len() - other_claim.rows.len(),
        "read a held partition, or missed a free one"
    );
    assert!(
        claim
            .rows
            .iter()
            .all(|row| outbox::writer::partition_of(&row.aggregate_id) != held)
    );
    tx.rollback().await.unwrap();
    other_tx.rollback().await.unwrap();
    outbox.cleanup().await;
}

#[tokio::test]
async fn a_rolled_back_transaction_publishes_nothing() {
    let outbox = TestOutbox::new().await;
    {
        let mut client = outbox.pool.get().await.unwrap();
        let tx = client.transaction().await.unwrap();
        outbox::writer::append(&tx, &new_events(&[("a".into(), 1)]))
            .await
            .unwrap();
        tx.rollback().await.unwrap();
    }
    let mut relay = outbox.relay(outbox.relay_config());
    assert_eq!(relay.try_publish_batch().await.unwrap(), Outcome::Empty);
    assert!(
        outbox
            .take_events(&outbox.topology.order_created_queue(), 1)
            .await
            .is_empty()
    );
    outbox.cleanup().await;
}

/// The standby check costs a server without synchronous standbys nothing:
/// no statement, and so no second connection beside the claim's (with a
/// pool of one, a relay that asked for one would wait and fail).
#[tokio::test]
async fn without_synchronous_standbys_a_batch_needs_no_second_connection() {
    let outbox = TestOutbox::new().await;
    let rows = events(3, 2);
    outbox.append(&rows).await;
    let mut relay = Relay::new(
        platform::db::pool(&outbox.database, 1).unwrap(),
        outbox.topology.clone(),
        outbox.relay_config(),
        RelayMetrics::unregistered(),
    );
    match relay.try_publish_batch().await.unwrap() {
        Outcome::Published(report) => assert_eq!(report.published, rows.len()),
        other => panic!("{} rows waiting, yet {other:?}", rows.len()),
    }
    let received = outbox
        .take_events(&outbox.topology.order_created_queue(), rows.len())
        .await;
    assert_eq!(received.len(), rows.len());
    outbox.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_mid_batch_releases_nothing_unconfirmed_and_loses_nothing() {
    let outbox = TestOutbox::new().await;
    let proxy = Proxy::start(testkit::server_addr(&amqp_url())).await;
    let all = events(20, 200);
    outbox.append(&all).await;
    let mut relay = outbox.relay(RelayConfig {
        batch_size: 4000,
        amqp_url: outbox::broker::BrokerUrl::new(&proxy.amqp_url()),
        ..outbox.relay_config()
    });
    // The first batch connects; the cut lands about halfway through it.
    proxy.cut_after(150_000);
    let first = relay.try_publish_batch().await;
    assert!(first.is_err(), "the cut should break the batch: {first:?}");
    assert_eq!(
        outbox
            .count("SELECT (SELECT count(*) FROM outbox) - (SELECT count(*) FROM outbox_pending)")
            .await,
        0,
        "the cursor moved past rows without a confirm"
    );
    assert_eq!(outbox.drain(&mut relay).await, all.len());
    let received = outbox
        .take_events(&outbox.topology.order_created_queue(), 2 * all.len())
        .await;
    let distinct = assert_in_order_per_aggregate(&received);
    assert_eq!(distinct, all.len(), "an event was lost");
    // Only the cut batch goes twice: at most one extra copy of each row.
    assert!(
        received.len() - distinct <= all.len(),
        "{} copies of {} events",
        received.len(),
        all.len()
    );
    outbox.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_between_publish_and_mark_resends_and_the_inbox_applies_once() {
    let outbox = TestOutbox::new().await;
    let all = events(10, 10);
    outbox.append(&all).await;
    let mut relay = outbox.relay(outbox.relay_config());
    {
        let mut client = outbox.pool.get().await.unwrap();
        let tx = client.transaction().await.unwrap();
        let sent = relay.claim_and_publish(&tx).await.unwrap();
        assert!(sent.is_some());
        // The relay dies here: its transaction rolls back, nothing is
        // marked. (Rolled back and awaited: a dropped transaction's
        // ROLLBACK can reach the server after the next relay's claim, which
        // would find the partitions still locked.)
        tx.rollback().await.unwrap();
    }
    assert_eq!(
        outbox.count("SELECT count(*) FROM outbox_pending").await,
        100
    );
    let mut restarted = outbox.relay(outbox.relay_config());
    assert_eq!(outbox.drain(&mut restarted).await, 100);

    let consumer = outbox.consumer();
    let mut session = consumer.open_session().await.unwrap();
    let signal = platform::shutdown::Signal::new();
    let mut applied = 0;
    let mut duplicates = 0;
    loop {
        let step = consumer
            .try_consume_batch(&mut session, Duration::from_secs(2), &signal)
            .await
            .unwrap();
        if step.deliveries == 0 {
            break;
        }
        applied += step.applied;
        duplicates += step.duplicates;
    }
    session.close().await;
    assert_eq!((applied, duplicates), (100, 100));
    let effects = outbox.effects().await;
    for aggregate in 0..10 {
        // Amounts 0..10 once each: 45, in 10 applications.
        assert_eq!(effects[&format!("agg-{aggregate}")], (45, 10));
    }
    outbox.cleanup().await;
}

/// Appends `events`, some of them of a type no queue is bound to.
async fn append_events(outbox: &TestOutbox, events: &[outbox::writer::NewEvent]) {
    let mut client = outbox.pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    outbox::writer::append(&tx, events).await.unwrap();
    tx.commit().await.unwrap();
}

fn unroutable(aggregate: &str) -> outbox::writer::NewEvent {
    outbox::writer::NewEvent::new(
        aggregate,
        "nobody.listens",
        &serde_json::json!({"amount": 2}),
    )
    .unwrap()
}

#[tokio::test]
async fn a_row_refused_while_its_neighbours_pass_is_set_aside_and_the_rest_flow() {
    let outbox = TestOutbox::new().await;
    let mut events = new_events(&[("a".into(), 1)]);
    events.push(unroutable("b"));
    append_events(&outbox, &events).await;
    let mut relay = outbox.relay(RelayConfig {
        max_attempts: 3,
        ..outbox.relay_config()
    });
    // Every batch carries the refused row and a good neighbour.
    for step in 0..3 {
        let outcome = relay.try_publish_batch().await.unwrap();
        let Outcome::Published(report) = outcome else {
            panic!("step {step}: {outcome:?}");
        };
        assert_eq!((report.published, report.refused), (1, 1), "step {step}");
        assert_eq!(report.set_aside, usize::from(step == 2), "step {step}");
        outbox.append(&[(format!("c{step}"), 3)]).await;
    }
    let outcome = relay.try_publish_batch().await.unwrap();
    let Outcome::Published(report) = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(counts(&report), (1, 1, 0, 0));
    assert!(report.oldest_confirmed.is_some());
    assert_eq!(relay.try_publish_batch().await.unwrap(), Outcome::Empty);
    let client = outbox.pool.get().await.unwrap();
    let (reason, attempts): (String, i32) = {
        let row = client
            .query_one(
                "SELECT last_error, attempts FROM outbox_refused WHERE set_aside_at IS NOT NULL",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert!(reason.contains("NO_ROUTE"), "{reason}");
    assert_eq!(attempts, 3);
    let received = outbox
        .take_events(&outbox.topology.order_created_queue(), 4)
        .await;
    assert_eq!(received.len(), 4);
    let stats = outbox::stats::collect(&client).await.unwrap();
    assert_eq!((stats.pending.rows, stats.pending.set_aside), (0, 1));
    drop(client);
    outbox.cleanup().await;
}

#[tokio::test]
async fn a_batch_the_broker_refuses_whole_counts_nothing_against_its_rows() {
    let outbox = TestOutbox::new().await;
    append_events(&outbox, &[unroutable("a"), unroutable("b")]).await;
    let mut relay = outbox.relay(RelayConfig {
        max_attempts: 2,
        events_per_message: 10,
        ..outbox.relay_config()
    });
    for _ in 0..4 {
        assert_eq!(
            relay.try_publish_batch().await.unwrap(),
            Outcome::BrokerRefused { rows: 2 }
        );
    }
    assert_eq!(
        outbox
            .count("SELECT (SELECT count(*) FROM outbox_pending) - (SELECT count(*) FROM outbox_refused)")
            .await,
        2,
        "a refusal of the whole batch was counted against its rows"
    );
    outbox.cleanup().await;
}

#[tokio::test]
async fn a_refused_packed_message_is_sent_again_unpacked_to_find_its_own_refusals() {
    let outbox = TestOutbox::new().await;
    let mut events = vec![unroutable("a"), unroutable("b"), unroutable("c")];
    events.extend(new_events(&[("d".into(), 1), ("e".into(), 2)]));
    append_events(&outbox, &events).await;
    let mut relay = outbox.relay(RelayConfig {
        events_per_message: 10,
        ..outbox.relay_config()
    });
    let outcome = relay.try_publish_batch().await.unwrap();
    // Two packed messages; the refused one again as three single ones,
    // each refused for itself: one attempt each.
    let Outcome::Published(report) = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(counts(&report), (2, 5, 3, 0));
    assert_eq!(
        outbox
            .count(
                "SELECT count(*) FROM outbox_refused WHERE event_type = 'nobody.listens' AND attempts = 1"
            )
            .await,
        3
    );
    outbox.cleanup().await;
}

#[tokio::test]
async fn a_deleted_queue_is_declared_again_and_nothing_is_set_aside() {
    let outbox = TestOutbox::new().await;
    let mut relay = outbox.relay(RelayConfig {
        max_attempts: 1,
        ..outbox.relay_config()
    });
    // Connected, then the queue disappears under the relay.
    outbox.append(&[("before".into(), 1)]).await;
    assert_eq!(outbox.drain(&mut relay).await, 1);
    let queue = outbox.topology.order_created_queue();
    let connection = outbox::broker::connect(&amqp_url(), "test").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await
        .unwrap();
    outbox.append(&[("x".into(), 1), ("y".into(), 2)]).await;
    assert_eq!(
        relay.try_publish_batch().await.unwrap(),
        Outcome::BrokerRefused { rows: 2 }
    );
    assert_eq!(
        outbox.drain(&mut relay).await,
        2,
        "sent once the queue was back"
    );
    assert_eq!(outbox.count("SELECT count(*) FROM outbox_refused").await, 0);
    let received = outbox.take_events(&queue, 2).await;
    assert_eq!(received.len(), 2);
    connection.close(200, "done".into()).await.unwrap();
    outbox.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_withholding_confirms_times_out_and_releases_the_batch() {
    let outbox = TestOutbox::new().await;
    let proxy = Proxy::start(testkit::server_addr(&amqp_url())).await;
    let mut relay = outbox.relay(RelayConfig {
        amqp_url: outbox::broker::BrokerUrl::new(&proxy.amqp_url()),
        confirm_timeout: Duration::from_millis(500),
        ..outbox.relay_config()
    });
    outbox.append(&[("first".into(), 1)]).await;
    assert_eq!(outbox.drain(&mut relay).await, 1);
    proxy.freeze();
    outbox.append(&[("held".into(), 2)]).await;
    let failed = tokio::time::timeout(Duration::from_secs(5), relay.try_publish_batch())
        .await
        .expect("the relay waited for confirms without end");
    assert!(failed.is_err(), "{failed:?}");
    // Rolled back: the row is unsent and its partition free to claim.
    let mut client = outbox.pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let claimable = outbox::relay::claim(&tx, 16, 10).await.unwrap();
    assert_eq!(
        claimable.rows.len(),
        1,
        "the held row stayed locked or the cursor moved past it"
    );
    // Awaited, so that its advisory locks are gone before the relay claims.
    tx.rollback().await.unwrap();
    drop(client);
    proxy.thaw();
    assert_eq!(
        outbox.drain(&mut relay).await,
        1,
        "sent on a new connection"
    );
    outbox.cleanup().await;
}

#[tokio::test]
async fn an_oversized_row_is_set_aside_at_once() {
    let outbox = TestOutbox::new().await;
    let big = "x".repeat(2000);
    let mut client = outbox.pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let event = outbox::writer::NewEvent::new(
        "big",
        "order.created",
        &serde_json::json!({"amount": 1, "pad": big}),
    )
    .unwrap();
    outbox::writer::append(&tx, &[event]).await.unwrap();
    tx.commit().await.unwrap();
    drop(client);
    outbox.append(&[("small".into(), 1)]).await;
    let mut relay = outbox.relay(RelayConfig {
        max_message_bytes: 1000,
        ..outbox.relay_config()
    });
    assert_eq!(outbox.drain(&mut relay).await, 1);
    assert_eq!(
        outbox
            .count("SELECT count(*) FROM outbox_refused WHERE set_aside_at IS NOT NULL")
            .await,
        1
    );
    outbox.cleanup().await;
}

/// Rows published, messages, rows refused, rows set aside.
fn counts(report: &outbox::relay::BatchReport) -> (usize, usize, usize, usize) {
    (
        report.published,
        report.messages,
        report.refused,
        report.set_aside,
    )
}

/// Whether nothing is left to send within `limit`.
async fn sent_within(outbox: &TestOutbox, limit: Duration) -> bool {
    within(limit, async || {
        outbox.count("SELECT count(*) FROM outbox_pending").await == 0
    })
    .await
}

/// Rows committed by another process (nothing announced them in this one)
/// are found by an idle relay's polls, the longest of which is its poll
/// interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_relay_finds_rows_of_another_process_by_polling() {
    let outbox = TestOutbox::new().await;
    let config = RelayConfig {
        poll_interval: Duration::from_millis(300),
        ..outbox.relay_config()
    };
    let stop = platform::shutdown::Signal::new();
    let running = tokio::spawn(outbox.relay(config).run(stop.clone()));
    // Idle long enough for its waits to have grown to the poll interval.
    tokio::time::sleep(Duration::from_secs(1)).await;
    outbox.append(&events(2, 2)).await;
    let sent = sent_within(&outbox, Duration::from_secs(5)).await;
    stop.cancel();
    running.await.unwrap();
    assert!(sent, "rows committed elsewhere were never sent");
    outbox.cleanup().await;
}

/// A commit of outbox rows in the relay's own process wakes it at once,
/// however long its idle wait has grown: here the wait in progress when
/// the rows commit ends about 4 s later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_relay_is_woken_by_a_commit_of_its_own_process() {
    let outbox = TestOutbox::new().await;
    let config = RelayConfig {
        poll_interval: Duration::from_secs(60),
        linger: Duration::ZERO,
        ..outbox.relay_config()
    };
    let stop = platform::shutdown::Signal::new();
    let running = tokio::spawn(outbox.relay(config).run(stop.clone()));
    // Waits of 10 ms doubling: the one in progress at 6 s ends at 10.2 s.
    tokio::time::sleep(Duration::from_secs(6)).await;
    {
        let mut client = outbox.pool.get().await.unwrap();
        let tx = client.transaction().await.unwrap();
        outbox::writer::append(&tx, &new_events(&events(2, 2)))
            .await
            .unwrap();
        outbox::writer::commit(tx).await.unwrap();
    }
    let sent = sent_within(&outbox, Duration::from_secs(3)).await;
    stop.cancel();
    running.await.unwrap();
    assert!(sent, "the relay slept through a commit of its own process");
    outbox.cleanup().await;
}

/// Committing outbox rows sends no NOTIFY (each one made every inserting
/// commit of the server take one lock in turn). Notifications arrive in
/// commit order, so a control sent after the rows' commit comes first
/// only if the rows sent none.
#[tokio::test]
async fn committing_outbox_rows_notifies_nobody() {
    use futures_util::StreamExt;
    let outbox = TestOutbox::new().await;
    let (listener, mut connection) = outbox
        .database
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    let (heard, mut hearing) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notification(notification) = message {
                let _ = heard.send(notification.channel().to_owned());
            }
        }
    });
    listener
        .batch_execute("LISTEN outbox; LISTEN control")
        .await
        .unwrap();
    outbox.append(&events(2, 2)).await;
    let client = outbox.pool.get().await.unwrap();
    client.batch_execute("NOTIFY control").await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), hearing.recv())
        .await
        .expect("not even the control notification arrived");
    assert_eq!(first.as_deref(), Some("control"));
    drop(listener);
    outbox.cleanup().await;
}

/// The most rows any node of a plan produced (`EXPLAIN ANALYZE`'s
/// actual rows, per loop).
fn most_rows(plan: &str) -> u64 {
    plan.split("(actual time=")
        .skip(1)
        .filter_map(|node| node.split("rows=").nth(1))
        .filter_map(|rows| rows.split_whitespace().next()?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// A batch reads what it sends, not the backlog: with 20,000 rows
/// waiting, reading a batch of 100 walks the id index from the cursor and
/// stops at the batch's end (sorting the backlog first would bring every
/// row up through the plan), the late rows are looked up by the few
/// transactions the cursor lists, and the probe for partitions with
/// something to send stops at each one's first row.
#[tokio::test]
async fn a_batch_reads_what_it_sends_not_the_backlog() {
    let outbox = TestOutbox::new().await;
    let client = outbox.pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO outbox (message_id, aggregate_id, partition, event_type, payload) \
             SELECT gen_random_uuid(), 'agg-' || n, n % 16, 'order.created', \
                 jsonb_build_object('amount', n) \
             FROM generate_series(1, 20000) n",
            &[],
        )
        .await
        .unwrap();
    client.batch_execute("ANALYZE outbox").await.unwrap();
    drop(client);
    let mut client = platform::db::connect(&outbox.database).await.unwrap();
    let plans = outbox::relay::plans(&mut client, 100).await.unwrap();
    let (_, read) = plans.iter().find(|(name, _)| *name == "read").unwrap();
    assert!(read.contains("rows=100 "), "{read}");
    let most = most_rows(read);
    assert!(
        most <= 1_000,
        "a node of a batch of 100 brought up {most} rows:\n{read}"
    );
    // A relay allowed fewer than all partitions asks which have something
    // to send: each one's first new row, not all of them.
    let (_, probe) = plans
        .iter()
        .find(|(name, _)| *name == "lock partitions with something to send")
        .unwrap();
    let most = most_rows(probe);
    assert!(
        most <= 1_000,
        "the probe of the partitions brought up {most} rows:\n{probe}"
    );
    drop(client);
    outbox.cleanup().await;
}
