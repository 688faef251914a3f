//! The outbox's time partitions: one past the retention window is kept
//! while it holds rows to send and dropped once they are sent, with relays
//! and consumers running; a cold one is frozen.

use std::time::Duration;

use outbox::partitions::{self, Slicing, Table};
use platform::shutdown::Signal;

use crate::helpers::{TestOutbox, within};

/// The slice of everything before the migration's first minutes.
const FIRST_SLICE: &str = "outbox_before_v3";

/// `rows` order.created events written an hour ago, into the first slice.
async fn write_an_hour_ago(outbox: &TestOutbox, rows: i64) {
    let client = outbox.pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO outbox (message_id, aggregate_id, partition, event_type, payload, created_at) \
             SELECT gen_random_uuid(), 'old-' || n, n % 16, 'order.created', \
                 jsonb_build_object('amount', n), now() - interval '1 hour' \
             FROM generate_series(1, $1::int8) n",
            &[&rows],
        )
        .await
        .unwrap();
}

async fn slice_exists(outbox: &TestOutbox, name: &str) -> bool {
    let client = outbox.pool.get().await.unwrap();
    client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
        .await
        .unwrap()
        .get(0)
}

async fn wait_until(what: &str, done: impl AsyncFnMut() -> bool) {
    assert!(
        within(Duration::from_secs(30), done).await,
        "{what} did not happen within 30 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_partition_goes_once_sent_while_relays_and_consumers_run() {
    let outbox = TestOutbox::new().await;
    write_an_hour_ago(&outbox, 40).await;
    // Everything older than a second is past the window.
    let slicing = Slicing {
        retention: Duration::from_secs(1),
        ..Slicing::for_retention(Duration::from_secs(3600))
    };
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let client = outbox.pool.get().await.unwrap();
    let upkeep = partitions::upkeep(&client, Table::Outbox, &slicing)
        .await
        .unwrap();
    assert_eq!(upkeep.kept, [FIRST_SLICE], "{upkeep:?}");
    assert!(upkeep.dropped.is_empty(), "dropped with rows still to send");

    let stop = Signal::new();
    let relay = outbox.relay(outbox.relay_config());
    let relaying = tokio::spawn(relay.run(stop.clone()));
    let consuming = tokio::spawn(outbox.consumer().run(stop.clone()));
    for round in 0..10 {
        outbox
            .append(&[
                (format!("new-{round}"), round),
                (format!("next-{round}"), round),
            ])
            .await;
    }
    wait_until("the old rows sent", async || {
        outbox.count("SELECT count(*) FROM outbox_pending").await == 0
    })
    .await;
    let upkeep = partitions::upkeep(&client, Table::Outbox, &slicing)
        .await
        .unwrap();
    assert_eq!(upkeep.dropped, [FIRST_SLICE], "{upkeep:?}");
    assert!(!slice_exists(&outbox, FIRST_SLICE).await);
    // Writing, relaying and consuming go on across the drop.
    outbox.append(&[("after".into(), 1)]).await;
    wait_until("every event applied", async || {
        outbox.effects().await.len() == 40 + 20 + 1
    })
    .await;
    stop.cancel();
    relaying.await.unwrap();
    consuming.await.unwrap();
    let effects = outbox.effects().await;
    assert!(
        effects.values().all(|(_, applications)| *applications == 1),
        "an event applied twice or lost: {effects:?}"
    );
    drop(client);
    outbox.cleanup().await;
}

#[tokio::test]
async fn partitions_are_made_ahead_and_a_cold_one_is_frozen_once() {
    let outbox = TestOutbox::new().await;
    write_an_hour_ago(&outbox, 10).await;
    let client = outbox.pool.get().await.unwrap();
    let frozen_xid = async || -> String {
        client
            .query_one(
                "SELECT relfrozenxid::text FROM pg_class WHERE relname = $1",
                &[&FIRST_SLICE],
            )
            .await
            .unwrap()
            .get(0)
    };
    let before = frozen_xid().await;
    let slicing = Slicing {
        freeze_after_xids: Some(-1),
        ..Slicing::for_retention(Duration::from_secs(24 * 3600))
    };
    let upkeep = partitions::upkeep(&client, Table::Outbox, &slicing)
        .await
        .unwrap();
    assert_eq!(upkeep.frozen, [FIRST_SLICE], "{upkeep:?}");
    assert_ne!(
        frozen_xid().await,
        before,
        "VACUUM (FREEZE) did not move relfrozenxid"
    );
    // Partitions cover now and the next `ahead` without a gap.
    let covered: bool = client
        .query_one(
            "SELECT bool_and(EXISTS ( \
                 SELECT 1 FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                 WHERE i.inhparent = 'outbox'::regclass \
                   AND pg_get_expr(c.relpartbound, c.oid) LIKE 'FOR VALUES FROM%' \
                   AND t >= COALESCE((regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']+)''\\)'))[1]::timestamptz, '-infinity') \
                   AND t < (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz)) \
             FROM generate_series(now(), now() + $1::text::interval, interval '1 minute') t",
            &[&format!("{} seconds", slicing.ahead.as_secs())],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        covered,
        "a minute of the next {:?} has no partition",
        slicing.ahead
    );
    drop(client);
    outbox.cleanup().await;
}

#[tokio::test]
async fn a_shorter_retention_makes_the_partitions_not_begun_again_at_its_length() {
    let outbox = TestOutbox::new().await;
    let client = outbox.pool.get().await.unwrap();
    let week = Slicing::for_retention(Duration::from_secs(7 * 24 * 3600));
    partitions::make_ahead(&client, Table::Outbox, &week)
        .await
        .unwrap();
    let lengths = async || -> Vec<(f64, bool)> {
        client
            .query(
                "SELECT extract(epoch FROM upper - lower)::float8, lower > now() FROM ( \
                     SELECT (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']+)''\\)'))[1]::timestamptz AS lower, \
                            (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz AS upper \
                     FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
                     WHERE i.inhparent = 'outbox'::regclass) s \
                 WHERE lower IS NOT NULL ORDER BY lower",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect()
    };
    assert!(
        lengths()
            .await
            .iter()
            .any(|(seconds, _)| *seconds == 86_400.0),
        "no day-long partition made for a week's retention"
    );
    let minutes = Slicing::for_retention(Duration::from_secs(6 * 60));
    partitions::make_ahead(&client, Table::Outbox, &minutes)
        .await
        .unwrap();
    let ahead: Vec<f64> = lengths()
        .await
        .into_iter()
        .filter(|(_, future)| *future)
        .map(|(seconds, _)| seconds)
        .collect();
    assert!(
        ahead.iter().all(|seconds| *seconds == 60.0),
        "partitions not begun kept another length: {ahead:?}"
    );
    drop(client);
    outbox.cleanup().await;
}
