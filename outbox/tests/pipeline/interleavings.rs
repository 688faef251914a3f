//! Each way a transaction can take its ids and commit around a relay's
//! read, one test each, against the real server: the row of the
//! transaction that commits last is sent once, whatever order its
//! transaction id, its row id and the others' commits came in; a rolled
//! back row never leaves. (Why no row can be skipped: docs/ARCHITECTURE.md,
//! "Nothing skipped".)

use std::time::Duration;

use deadpool_postgres::Transaction;
use outbox::relay::RelayConfig;
use outbox::writer;

use crate::helpers::{TestOutbox, new_events, take_xid};

/// Appends one event of `aggregate`.
async fn append(tx: &Transaction<'_>, aggregate: &str) {
    writer::append(tx, &new_events(&[(aggregate.into(), 1)]))
        .await
        .unwrap();
}

async fn pending(outbox: &TestOutbox) -> i64 {
    outbox.count("SELECT count(*) FROM outbox_pending").await
}

/// The case: A takes its transaction id, then B; B appends first
/// (the smaller row id), A appends and commits; the relay sends A's row
/// under a snapshot whose xmax is B's id (one past A, the latest
/// completed), so B is neither visible nor in its list; then B commits.
#[tokio::test]
async fn a_transaction_whose_id_is_past_the_snapshots_xmax_is_sent_when_it_commits() {
    let outbox = TestOutbox::new().await;
    let (mut a, mut b) = (
        outbox.pool.get().await.unwrap(),
        outbox.pool.get().await.unwrap(),
    );
    let (a, b) = (
        a.transaction().await.unwrap(),
        b.transaction().await.unwrap(),
    );
    take_xid(&a).await;
    take_xid(&b).await;
    append(&b, "b").await;
    append(&a, "a").await;
    a.commit().await.unwrap();
    let mut relay = outbox.relay(outbox.relay_config());
    assert_eq!(outbox.drain(&mut relay).await, 1, "A's row");
    b.commit().await.unwrap();
    assert_eq!(
        pending(&outbox).await,
        1,
        "B's row is not counted as pending"
    );
    assert_eq!(outbox.drain(&mut relay).await, 1, "B's row was skipped");
    assert_eq!(outbox.sent_aggregates(3).await, ["a", "b"]);
    assert_eq!(pending(&outbox).await, 0);
    outbox.cleanup().await;
}

/// The same with B's transaction id taken by a write to another table:
/// what a service's writer does (its own rows first, the event after).
#[tokio::test]
async fn a_transaction_that_wrote_elsewhere_first_is_sent_when_it_commits() {
    let outbox = TestOutbox::new().await;
    let (mut a, mut b) = (
        outbox.pool.get().await.unwrap(),
        outbox.pool.get().await.unwrap(),
    );
    let (a, b) = (
        a.transaction().await.unwrap(),
        b.transaction().await.unwrap(),
    );
    take_xid(&a).await;
    b.execute("INSERT INTO effects VALUES ('b', 0, 0)", &[])
        .await
        .unwrap();
    append(&b, "b").await;
    append(&a, "a").await;
    a.commit().await.unwrap();
    let mut relay = outbox.relay(outbox.relay_config());
    assert_eq!(outbox.drain(&mut relay).await, 1);
    b.commit().await.unwrap();
    assert_eq!(outbox.drain(&mut relay).await, 1, "B's row was skipped");
    assert_eq!(outbox.sent_aggregates(3).await, ["a", "b"]);
    outbox.cleanup().await;
}

/// B's first write is its outbox row, and the row's id is taken while B
/// has no transaction id yet (a slow column between them holds it
/// there): A takes a larger id, commits and is sent meanwhile. The writer
/// must take its transaction id before its row id; otherwise B's id comes
/// after every snapshot that could have listed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_whose_id_was_taken_before_its_transaction_id_is_sent() {
    let outbox = TestOutbox::new().await;
    // A first row: the sequence logs its first value (and every 32nd),
    // and a logging nextval takes a transaction id itself; B's must not.
    outbox.append(&[("first".into(), 1)]).await;
    let mut relay = outbox.relay(outbox.relay_config());
    assert_eq!(outbox.drain(&mut relay).await, 1);
    // The last id taken (the sequence starts not yet called).
    let last_id = async || -> i64 {
        outbox
            .count("SELECT last_value - (NOT is_called)::int FROM outbox_row_id")
            .await
    };
    let before = last_id().await;
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let pool = outbox.pool.clone();
    let b = tokio::spawn(async move {
        let mut client = pool.get().await.unwrap();
        let tx = client.transaction().await.unwrap();
        // Every column is evaluated in order: the id's default, then the
        // payload (a second and a half asleep), then the xid's default.
        tx.execute(
            "INSERT INTO outbox (message_id, aggregate_id, partition, event_type, payload) \
             VALUES (gen_random_uuid(), 'b', $1, 'order.created', \
                     jsonb_build_object('amount', 1, 'slept', pg_sleep(1.5)::text))",
            &[&writer::partition_of("b")],
        )
        .await
        .unwrap();
        released.await.unwrap();
        tx.commit().await.unwrap();
    });
    let started = std::time::Instant::now();
    while last_id().await == before {
        assert!(started.elapsed() < Duration::from_secs(10), "B took no id");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    outbox.append(&[("a".into(), 1)]).await;
    assert_eq!(outbox.drain(&mut relay).await, 1, "A's row");
    release.send(()).unwrap();
    b.await.unwrap();
    assert_eq!(outbox.drain(&mut relay).await, 1, "B's row was skipped");
    assert_eq!(outbox.sent_aggregates(4).await, ["a", "b", "first"]);
    outbox.cleanup().await;
}

/// B rolls back a savepoint that held a row, appends another, and
/// commits after A: the second row is sent, the rolled back one never.
#[tokio::test]
async fn a_savepoint_rolled_back_sends_only_what_its_transaction_kept() {
    let outbox = TestOutbox::new().await;
    let (mut a, mut b) = (
        outbox.pool.get().await.unwrap(),
        outbox.pool.get().await.unwrap(),
    );
    let (a, mut b) = (
        a.transaction().await.unwrap(),
        b.transaction().await.unwrap(),
    );
    take_xid(&a).await;
    {
        let savepoint = b.savepoint("before").await.unwrap();
        append(&savepoint, "rolled-back").await;
        savepoint.rollback().await.unwrap();
    }
    append(&b, "b").await;
    append(&a, "a").await;
    a.commit().await.unwrap();
    let mut relay = outbox.relay(outbox.relay_config());
    assert_eq!(outbox.drain(&mut relay).await, 1);
    b.commit().await.unwrap();
    assert_eq!(
        outbox.drain(&mut relay).await,
        1,
        "B's kept row was skipped"
    );
    assert_eq!(outbox.sent_aggregates(4).await, ["a", "b"]);
    assert_eq!(pending(&outbox).await, 0);
    outbox.cleanup().await;
}

/// B aborts after A was sent: nothing of B leaves, nothing stays pending,
/// and the next commit is sent as usual.
#[tokio::test]
async fn an_aborted_transaction_sends_nothing_and_holds_nothing_back() {
    let outbox = TestOutbox::new().await;
    let (mut a, mut b) = (
        outbox.pool.get().await.unwrap(),
        outbox.pool.get().await.unwrap(),
    );
    let (a, b) = (
        a.transaction().await.unwrap(),
        b.transaction().await.unwrap(),
    );
    take_xid(&a).await;
    take_xid(&b).await;
    append(&b, "aborted").await;
    append(&a, "a").await;
    a.commit().await.unwrap();
    let mut relay = outbox.relay(outbox.relay_config());
    assert_eq!(outbox.drain(&mut relay).await, 1);
    b.rollback().await.unwrap();
    assert_eq!(outbox.drain(&mut relay).await, 0);
    assert_eq!(pending(&outbox).await, 0);
    outbox.append(&[("next".into(), 1)]).await;
    assert_eq!(outbox.drain(&mut relay).await, 1);
    assert_eq!(outbox.sent_aggregates(3).await, ["a", "next"]);
    outbox.cleanup().await;
}

/// Two relays each allowed one claim partition: the second holds the
/// partition of `there` in its batch while the first claims the one of
/// `here`, where B's row sits below the cursor the first one moves.
#[tokio::test]
async fn two_relays_on_different_claim_partitions_send_a_late_commit() {
    let outbox = TestOutbox::new().await;
    let here = "agg-1";
    let there = (2..100)
        .map(|n| format!("agg-{n}"))
        .find(|other| writer::partition_of(other) != writer::partition_of(here))
        .unwrap();
    outbox.append(&[(there.clone(), 1)]).await;
    let mut second_client = outbox.pool.get().await.unwrap();
    let second_batch = second_client.transaction().await.unwrap();
    let held = outbox::relay::claim(&second_batch, 1, 100).await.unwrap();
    assert_eq!(
        held.rows.len(),
        1,
        "the second relay holds the partition of {there}"
    );
    let (mut a, mut b) = (
        outbox.pool.get().await.unwrap(),
        outbox.pool.get().await.unwrap(),
    );
    let (a, b) = (
        a.transaction().await.unwrap(),
        b.transaction().await.unwrap(),
    );
    take_xid(&a).await;
    take_xid(&b).await;
    append(&b, here).await;
    append(&a, here).await;
    a.commit().await.unwrap();
    let one_partition = RelayConfig {
        claim_partitions: 1,
        ..outbox.relay_config()
    };
    let mut first = outbox.relay(one_partition.clone());
    let mut second = outbox.relay(one_partition);
    assert_eq!(
        outbox.drain(&mut first).await,
        1,
        "A's row, in the partition of {here}"
    );
    second_batch.rollback().await.unwrap();
    b.commit().await.unwrap();
    let sent_after = outbox.drain(&mut first).await + outbox.drain(&mut second).await;
    assert_eq!(sent_after, 2, "B's row was skipped, or the row of {there}");
    let mut expected = vec![here.to_owned(), here.to_owned(), there];
    expected.sort();
    assert_eq!(outbox.sent_aggregates(4).await, expected);
    outbox.cleanup().await;
}

/// The cursor a batch leaves lists the transactions from its read's
/// snapshot up to its own id, so that id must come after the read: a
/// claim in a transaction that took one before is refused.
#[tokio::test]
async fn a_claim_in_a_transaction_that_already_has_an_id_is_refused() {
    let outbox = TestOutbox::new().await;
    outbox.append(&[("a".into(), 1)]).await;
    let mut client = outbox.pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    take_xid(&tx).await;
    let refused = outbox::relay::claim(&tx, 16, 100)
        .await
        .expect_err("a claim after the transaction took its id");
    assert!(refused.to_string().contains("transaction id"), "{refused}");
    tx.rollback().await.unwrap();
    drop(client);
    outbox.cleanup().await;
}
