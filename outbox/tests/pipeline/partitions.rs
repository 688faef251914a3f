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

/// Appends, in `tx`, one order.created event of `aggregate` written an
/// hour ago: into the first slice, as a transaction open that long would.
async fn append_an_hour_ago(tx: &deadpool_postgres::Transaction<'_>, aggregate: &str) {
    tx.execute(
        "INSERT INTO outbox (message_id, aggregate_id, partition, event_type, payload, created_at) \
         VALUES (gen_random_uuid(), $1, $2, 'order.created', '{\"amount\": 1}', \
                 now() - interval '1 hour')",
        &[&aggregate, &outbox::writer::partition_of(aggregate)],
    )
    .await
    .unwrap();
}

/// Everything older than a second is past the window.
fn a_second() -> Slicing {
    Slicing {
        retention: Duration::from_secs(1),
        ..Slicing::for_retention(Duration::from_secs(3600))
    }
}

/// The case: a concurrent detach cut short by its lock timeout
/// leaves the slice "detach pending", and a transaction open since then
/// commits a row into it, which the outbox no longer shows. The upkeep
/// finalizes the detach, looks again by the slice's own name, and moves
/// the row to be sent before it drops the slice.
#[tokio::test]
async fn a_row_committed_into_a_slice_whose_detach_was_cut_short_is_sent_not_dropped() {
    let outbox = TestOutbox::new().await;
    write_an_hour_ago(&outbox, 3).await;
    let mut relay = outbox.relay(outbox.relay_config());
    assert_eq!(outbox.drain(&mut relay).await, 3);
    let mut writer = outbox.pool.get().await.unwrap();
    let late = writer.transaction().await.unwrap();
    append_an_hour_ago(&late, "late").await;
    let detacher = outbox.pool.get().await.unwrap();
    detacher
        .batch_execute("SET lock_timeout = '1s'")
        .await
        .unwrap();
    let cut_short = detacher
        .batch_execute(&format!(
            "ALTER TABLE outbox DETACH PARTITION {FIRST_SLICE} CONCURRENTLY"
        ))
        .await
        .expect_err("the detach did not wait for the writer");
    assert_eq!(
        cut_short.code(),
        Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE),
        "{cut_short}"
    );
    late.commit().await.unwrap();
    assert_eq!(
        outbox
            .count("SELECT count(*) FROM outbox WHERE aggregate_id = 'late'")
            .await,
        0,
        "a detach pending slice's row is no longer seen through the outbox"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let client = outbox.pool.get().await.unwrap();
    let upkeep = partitions::upkeep(&client, Table::Outbox, &a_second())
        .await
        .unwrap();
    assert_eq!(upkeep.dropped, [FIRST_SLICE], "{upkeep:?}");
    assert_eq!(upkeep.moved, 1, "{upkeep:?}");
    assert!(!slice_exists(&outbox, FIRST_SLICE).await);
    assert_eq!(
        outbox.drain(&mut relay).await,
        1,
        "the late row was dropped"
    );
    assert_eq!(
        outbox.sent_aggregates(5).await,
        ["late", "old-1", "old-2", "old-3"]
    );
    assert_eq!(outbox.count("SELECT count(*) FROM outbox_pending").await, 0);
    drop((client, detacher));
    outbox.cleanup().await;
}

/// A writer open since before its slice's end, its row not committed:
/// the slice stays while the writer holds it (the upkeep's detach and its
/// last look both wait for it, and give up for the round), and once the
/// writer commits, its row is sent and the slice goes.
#[tokio::test]
async fn an_expired_slice_an_open_writer_holds_goes_only_after_its_row_is_sent() {
    let outbox = TestOutbox::new().await;
    write_an_hour_ago(&outbox, 2).await;
    let mut relay = outbox.relay(outbox.relay_config());
    assert_eq!(outbox.drain(&mut relay).await, 2);
    let mut writer = outbox.pool.get().await.unwrap();
    let open = writer.transaction().await.unwrap();
    append_an_hour_ago(&open, "open").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let client = outbox.pool.get().await.unwrap();
    for round in 0..2 {
        let upkeep = partitions::upkeep(&client, Table::Outbox, &a_second())
            .await
            .unwrap();
        assert_eq!(upkeep.kept, [FIRST_SLICE], "round {round}: {upkeep:?}");
        assert!(upkeep.dropped.is_empty(), "round {round}: {upkeep:?}");
    }
    open.commit().await.unwrap();
    let upkeep = partitions::upkeep(&client, Table::Outbox, &a_second())
        .await
        .unwrap();
    assert_eq!(upkeep.dropped, [FIRST_SLICE], "{upkeep:?}");
    assert_eq!(
        outbox.drain(&mut relay).await,
        1,
        "the open writer's row was dropped"
    );
    assert_eq!(outbox.sent_aggregates(4).await, ["old-1", "old-2", "open"]);
    drop(client);
    outbox.cleanup().await;
}

/// Instances of a service start together on one database, each making the
/// partitions ahead before it serves: both succeed, one after the other
/// (at once, the second to create a slice failed on a duplicate type, and
/// its process stopped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_making_the_partitions_ahead_at_once_both_succeed() {
    let outbox = TestOutbox::new().await;
    let slicing = Slicing::for_retention(Duration::from_secs(6 * 60));
    for round in 0..5 {
        let (first, second) = (
            platform::db::connect(&outbox.database).await.unwrap(),
            platform::db::connect(&outbox.database).await.unwrap(),
        );
        // Slices of another length each round: all of them made anew.
        let slicing = Slicing {
            interval: Duration::from_secs(60 * (round + 1)),
            ..slicing
        };
        let (made, also) = tokio::join!(
            partitions::make_ahead(&first, Table::Outbox, &slicing),
            partitions::make_ahead(&second, Table::Outbox, &slicing),
        );
        made.unwrap_or_else(|error| panic!("round {round}: {error}"));
        also.unwrap_or_else(|error| panic!("round {round}: {error}"));
    }
    outbox.cleanup().await;
}
