//! The relay's cursor over the append-only outbox: a transaction that
//! commits after a later one is sent, not skipped; events of one aggregate
//! leave in commit order even when their transaction ids run the other
//! way; a transaction left open anywhere holds no relay back.

use outbox::writer;

use crate::helpers::{TestOutbox, new_events, take_xid};

/// Appends one event of `aggregate` with `amount` in `tx`, after taking the
/// aggregate's lock, as a writer of that aggregate would.
async fn append_locked(tx: &deadpool_postgres::Transaction<'_>, aggregate: &str, amount: i64) {
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&aggregate])
        .await
        .unwrap();
    writer::append(tx, &new_events(&[(aggregate.into(), amount)]))
        .await
        .unwrap();
}

fn amounts_of(events: &[outbox::envelope::Envelope], aggregate: &str) -> Vec<i64> {
    events
        .iter()
        .filter(|event| event.aggregate_id == aggregate)
        .map(|event| {
            let payload: serde_json::Value = serde_json::from_str(event.payload.get()).unwrap();
            payload["amount"].as_i64().unwrap()
        })
        .collect()
}

#[tokio::test]
async fn a_transaction_that_commits_after_a_later_one_is_sent_not_skipped() {
    let outbox = TestOutbox::new().await;
    let mut early = outbox.pool.get().await.unwrap();
    let early = early.transaction().await.unwrap();
    // The smaller id, still uncommitted while a larger one commits.
    writer::append(&early, &new_events(&[("early".into(), 1)]))
        .await
        .unwrap();
    outbox.append(&[("late".into(), 2)]).await;
    let mut relay = outbox.relay(outbox.relay_config());
    assert_eq!(outbox.drain(&mut relay).await, 1, "only the committed row");
    early.commit().await.unwrap();
    assert_eq!(
        outbox.drain(&mut relay).await,
        1,
        "the row committed last, with the smaller id, was skipped"
    );
    let queue = outbox.topology.order_created_queue();
    let mut aggregates: Vec<String> = outbox
        .take_events(&queue, 3)
        .await
        .into_iter()
        .map(|event| event.aggregate_id)
        .collect();
    aggregates.sort();
    assert_eq!(aggregates, ["early", "late"]);
    assert_eq!(outbox.count("SELECT count(*) FROM outbox_pending").await, 0);
    outbox.cleanup().await;
}

#[tokio::test]
async fn events_of_an_aggregate_leave_in_commit_order_when_their_xids_run_the_other_way() {
    let outbox = TestOutbox::new().await;
    let (mut b, mut c, mut a) = (
        outbox.pool.get().await.unwrap(),
        outbox.pool.get().await.unwrap(),
        outbox.pool.get().await.unwrap(),
    );
    // B takes its transaction id first, C next (and stays open: the oldest
    // running transaction between the two), A last.
    let (b, c, a) = (
        b.transaction().await.unwrap(),
        c.transaction().await.unwrap(),
        a.transaction().await.unwrap(),
    );
    take_xid(&b).await;
    take_xid(&c).await;
    take_xid(&a).await;
    // A writes the aggregate's first event and commits; B, which waited
    // for the aggregate, writes its second: a larger id, a smaller xid.
    append_locked(&a, "g", 1).await;
    a.commit().await.unwrap();
    let mut relay = outbox.relay(outbox.relay_config());
    assert_eq!(outbox.drain(&mut relay).await, 1, "A's event, with C open");
    append_locked(&b, "g", 2).await;
    b.commit().await.unwrap();
    {
        // Written and rolled back: never sent.
        let mut client = outbox.pool.get().await.unwrap();
        let rolled_back = client.transaction().await.unwrap();
        append_locked(&rolled_back, "h", 0).await;
        rolled_back.rollback().await.unwrap();
    }
    {
        // Two more of one aggregate in one batch, B-style, C still open.
        let mut first = outbox.pool.get().await.unwrap();
        let mut second = outbox.pool.get().await.unwrap();
        let (first, second) = (
            first.transaction().await.unwrap(),
            second.transaction().await.unwrap(),
        );
        take_xid(&second).await;
        take_xid(&first).await;
        append_locked(&first, "k", 1).await;
        first.commit().await.unwrap();
        append_locked(&second, "k", 2).await;
        second.commit().await.unwrap();
    }
    assert_eq!(
        outbox.drain(&mut relay).await,
        3,
        "events held back behind the transaction left open"
    );
    c.rollback().await.unwrap();
    let events = outbox
        .take_events(&outbox.topology.order_created_queue(), 6)
        .await;
    assert_eq!(amounts_of(&events, "g"), [1, 2]);
    assert_eq!(amounts_of(&events, "k"), [1, 2]);
    assert!(
        amounts_of(&events, "h").is_empty(),
        "a rolled-back row was sent"
    );
    outbox.cleanup().await;
}
