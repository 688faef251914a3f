//! On the Patroni cluster of `make pg-cluster`: the standby check proves
//! a commit only on the server the claim read from; and prepared
//! transactions (two-phase commit: the cluster's nodes allow them, the
//! local server allows none). A prepared writer stays in every snapshot's running list until
//! it is committed, holds its locks, and appears in no session's
//! activity. Its row is sent once it is committed, and an expired slice
//! it wrote into is not dropped before that. Against the cluster, the
//! relays also prove each batch on a synchronous standby first.

use std::time::Duration;

use deadpool_postgres::Transaction;
use outbox::partitions::{self, Slicing, Table};
use outbox::writer;

use crate::helpers::{TestOutbox, new_events, take_xid};

/// A test outbox on the cluster's leader, if the cluster is healthy.
async fn on_cluster() -> Option<TestOutbox> {
    let url = testkit::pg_cluster::healthy_url("postgres")?;
    Some(TestOutbox::on(TestOutbox::fresh_database_on(&url).await).await)
}

/// A transaction prepared by a test: rolled back if the test ends
/// without committing it (a prepared transaction outlives its session,
/// holding its locks and the cluster's horizon, until someone ends it).
struct Prepared {
    name: String,
    database: tokio_postgres::Config,
    committed: bool,
}

impl Prepared {
    async fn commit(mut self, outbox: &TestOutbox) {
        let client = outbox.pool.get().await.unwrap();
        client
            .batch_execute(&format!("COMMIT PREPARED '{}'", self.name))
            .await
            .unwrap();
        self.committed = true;
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        let (name, database) = (self.name.clone(), self.database.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let client = platform::db::connect(&database).await.unwrap();
                let _ = client
                    .batch_execute(&format!("ROLLBACK PREPARED '{name}'"))
                    .await;
            });
        })
        .join();
    }
}

/// Prepares `tx` under a name of its own.
async fn prepare(outbox: &TestOutbox, tx: Transaction<'_>) -> Prepared {
    let name = format!("outbox-test-{}", uuid::Uuid::new_v4().simple());
    tx.batch_execute(&format!("PREPARE TRANSACTION '{name}'"))
        .await
        .unwrap();
    // The transaction is the server's now: the ROLLBACK sent as `tx` is
    // dropped finds none open in the session (a warning, nothing more).
    drop(tx);
    Prepared {
        name,
        database: outbox.database.clone(),
        committed: false,
    }
}

/// The case with B prepared instead of open: B took its
/// transaction id after A's, and is committed only after A's row left.
#[tokio::test]
async fn a_prepared_transaction_is_sent_once_committed() {
    let Some(outbox) = on_cluster().await else {
        return;
    };
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
    writer::append(&b, &new_events(&[("b".into(), 1)]))
        .await
        .unwrap();
    let prepared = prepare(&outbox, b).await;
    writer::append(&a, &new_events(&[("a".into(), 1)]))
        .await
        .unwrap();
    a.commit().await.unwrap();
    let mut relay = outbox.relay(outbox.relay_config());
    assert_eq!(outbox.drain(&mut relay).await, 1, "A's row");
    prepared.commit(&outbox).await;
    assert_eq!(outbox.drain(&mut relay).await, 1, "B's row was skipped");
    assert_eq!(outbox.sent_aggregates(3).await, ["a", "b"]);
    outbox.cleanup().await;
}

/// A prepared writer's row in an expired slice: the slice stays while the
/// prepared transaction holds it (no activity lists it), and once it is
/// committed, its row is sent and the slice goes.
#[tokio::test]
async fn an_expired_slice_a_prepared_writer_holds_goes_only_after_its_row_is_sent() {
    let Some(outbox) = on_cluster().await else {
        return;
    };
    let mut writer = outbox.pool.get().await.unwrap();
    let tx = writer.transaction().await.unwrap();
    tx.execute(
        "INSERT INTO outbox (message_id, aggregate_id, partition, event_type, payload, created_at) \
         VALUES (gen_random_uuid(), 'prepared', $1, 'order.created', '{\"amount\": 1}', \
                 now() - interval '1 hour')",
        &[&writer::partition_of("prepared")],
    )
    .await
    .unwrap();
    let prepared = prepare(&outbox, tx).await;
    drop(writer);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let a_second = Slicing {
        retention: Duration::from_secs(1),
        ..Slicing::for_retention(Duration::from_secs(3600))
    };
    let client = outbox.pool.get().await.unwrap();
    for round in 0..2 {
        let upkeep = partitions::upkeep(&client, Table::Outbox, &a_second)
            .await
            .unwrap();
        assert_eq!(
            upkeep.kept,
            ["outbox_before_v3"],
            "round {round}: {upkeep:?}"
        );
    }
    prepared.commit(&outbox).await;
    let upkeep = partitions::upkeep(&client, Table::Outbox, &a_second)
        .await
        .unwrap();
    assert_eq!(upkeep.dropped, ["outbox_before_v3"], "{upkeep:?}");
    let mut relay = outbox.relay(outbox.relay_config());
    assert_eq!(
        outbox.drain(&mut relay).await,
        1,
        "the prepared row was dropped"
    );
    assert_eq!(outbox.sent_aggregates(2).await, ["prepared"]);
    drop(client);
    outbox.cleanup().await;
}

/// The relay's standby check runs on another connection of the pool than
/// its claim; given the identity of the server the claim read from, it
/// proves nothing on another one (after a failover, a multi-host URL's
/// next connection may reach another server).
#[tokio::test]
async fn the_standby_check_proves_nothing_on_another_server_than_the_claims() {
    let Some(outbox) = on_cluster().await else {
        return;
    };
    let client = outbox.pool.get().await.unwrap();
    let leader: String = client
        .query_one(&format!("SELECT {}", outbox::standby::SERVER_SQL), &[])
        .await
        .unwrap()
        .get(0);
    drop(client);
    outbox::standby::has_what_was_read(&outbox.pool, &leader)
        .await
        .expect("the check on the claim's own server");
    let elsewhere = TestOutbox::new().await;
    let refused = outbox::standby::has_what_was_read(&elsewhere.pool, &leader)
        .await
        .expect_err("a commit on another server proved the leader's");
    assert!(refused.to_string().contains("instead of"), "{refused}");
    elsewhere.cleanup().await;
    outbox.cleanup().await;
}
