//! The inbox in time slices: every kind of id is recorded once, in the
//! table its kind and the horizon say; an id from a clock ahead is refused
//! as bad data; a delivery while the horizon moves meets the one before
//! it, and a horizon in place is not moved again; a slice past the window goes while ids are recorded, and its ids
//! are recorded apart after; ids recorded before the upgrade still count.

use std::collections::HashSet;
use std::time::Duration;

use outbox::inbox;
use outbox::partitions::{self, Slicing, Table};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::helpers::TestOutbox;

/// A UUIDv7 made at `at`.
fn id_made_at(at: OffsetDateTime) -> Uuid {
    let nanos = at.unix_timestamp_nanos();
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        (nanos / 1_000_000_000) as u64,
        (nanos % 1_000_000_000) as u32,
    );
    Uuid::new_v7(ts)
}

/// The start of this minute.
fn minute_start() -> OffsetDateTime {
    OffsetDateTime::now_utc()
        .replace_second(0)
        .and_then(|at| at.replace_nanosecond(0))
        .unwrap()
}

/// A slice of the inbox from `start` for a minute, with the horizon at
/// its start.
async fn slice_at(outbox: &TestOutbox, name: &str, start: OffsetDateTime) {
    let client = outbox.pool.get().await.unwrap();
    client
        .batch_execute(&format!(
            "CREATE TABLE {name} PARTITION OF inbox FOR VALUES FROM ('{}') TO ('{}'); \
             UPDATE inbox_horizon SET timed_from = '{}'",
            inbox::first_id_at(start),
            inbox::first_id_at(start + time::Duration::minutes(1)),
            inbox::first_id_at(start),
        ))
        .await
        .unwrap();
}

/// Where the inbox's time slices begin.
async fn horizon(outbox: &TestOutbox) -> Uuid {
    let client = outbox.pool.get().await.unwrap();
    client
        .query_one("SELECT timed_from FROM inbox_horizon", &[])
        .await
        .unwrap()
        .get(0)
}

/// Records `ids` in a transaction of their own and commits.
async fn record(outbox: &TestOutbox, ids: &[Uuid]) -> outbox::Result<HashSet<Uuid>> {
    let mut client = outbox.pool.get().await.unwrap();
    let tx = client.transaction().await.unwrap();
    let fresh = inbox::record(&tx, ids).await?;
    tx.commit().await.unwrap();
    Ok(fresh)
}

#[tokio::test]
async fn every_kind_of_id_is_recorded_once_in_its_table() {
    let outbox = TestOutbox::new().await;
    let now = Uuid::now_v7();
    let untimed = Uuid::new_v4();
    let month_old = id_made_at(OffsetDateTime::now_utc() - time::Duration::days(30));
    // Twice in the batch too: once.
    let ids = [now, untimed, month_old, now];
    let fresh = record(&outbox, &ids).await.unwrap();
    assert_eq!(fresh, HashSet::from([now, untimed, month_old]));
    assert!(record(&outbox, &ids).await.unwrap().is_empty());
    // The new one in its time slice; the other two (no time, older than
    // the slices) apart.
    let in_slices = outbox
        .count(&format!(
            "SELECT count(*) FROM inbox WHERE message_id = '{now}'"
        ))
        .await;
    let apart = outbox
        .count(&format!(
            "SELECT count(*) FROM inbox_untimed WHERE message_id IN ('{untimed}', '{month_old}')"
        ))
        .await;
    assert_eq!((in_slices, apart), (1, 2));
    outbox.cleanup().await;
}

#[tokio::test]
async fn an_id_from_a_clock_ahead_is_refused_as_bad_data() {
    let outbox = TestOutbox::new().await;
    let ahead = id_made_at(OffsetDateTime::now_utc() + time::Duration::days(365));
    let error = record(&outbox, &[Uuid::now_v7(), ahead])
        .await
        .expect_err("an id a year ahead has no slice");
    assert!(error.is_in_the_data(), "{error}");
    assert!(error.to_string().contains("clock ahead"), "{error}");
    assert_eq!(outbox.count("SELECT count(*) FROM inbox").await, 0);
    outbox.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_while_the_horizon_moves_meets_the_one_before_it() {
    let outbox = TestOutbox::new().await;
    // A slice 57 minutes old: with an hour's window in ten-minute slices,
    // the horizon moves past it now, and it goes in three minutes.
    let start = minute_start() - time::Duration::minutes(58);
    slice_at(&outbox, "inbox_nearly_gone", start).await;
    let id = id_made_at(start + time::Duration::seconds(30));
    // The first delivery records it and has not committed yet.
    let mut first = outbox.pool.get().await.unwrap();
    let first_tx = first.transaction().await.unwrap();
    assert_eq!(
        inbox::record(&first_tx, &[id]).await.unwrap(),
        HashSet::from([id])
    );
    let upkeep = {
        let pool = outbox.pool.clone();
        tokio::spawn(async move {
            let client = pool.get().await.unwrap();
            let hour = Slicing::for_retention(Duration::from_secs(3600));
            partitions::upkeep(&client, Table::Inbox, &hour).await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The second delivery comes while the horizon is being moved.
    let second = {
        let pool = outbox.pool.clone();
        tokio::spawn(async move {
            let mut client = pool.get().await.unwrap();
            let tx = client.transaction().await.unwrap();
            let fresh = inbox::record(&tx, &[id]).await.unwrap();
            tx.commit().await.unwrap();
            fresh
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    first_tx.commit().await.unwrap();
    let upkeep = upkeep.await.unwrap().unwrap();
    assert!(upkeep.dropped.is_empty(), "{upkeep:?}");
    assert!(
        second.await.unwrap().is_empty(),
        "the second delivery applied too"
    );
    assert_eq!(
        horizon(&outbox).await,
        inbox::first_id_at(start + time::Duration::minutes(1))
    );
    drop(first);
    outbox.cleanup().await;
}

#[tokio::test]
async fn a_horizon_already_moved_is_not_moved_again_under_the_lock() {
    let outbox = TestOutbox::new().await;
    let start = minute_start() - time::Duration::minutes(58);
    slice_at(&outbox, "inbox_nearly_gone", start).await;
    let hour = Slicing::for_retention(Duration::from_secs(3600));
    let client = outbox.pool.get().await.unwrap();
    partitions::upkeep(&client, Table::Inbox, &hour)
        .await
        .unwrap();
    // A recording transaction stays open: were the horizon moved again,
    // the upkeep would wait for it past its lock timeout and fail.
    let mut recording = outbox.pool.get().await.unwrap();
    let open = recording.transaction().await.unwrap();
    inbox::record(&open, &[Uuid::now_v7()]).await.unwrap();
    let upkeep = partitions::upkeep(&client, Table::Inbox, &hour).await;
    assert!(upkeep.is_ok(), "{upkeep:?}");
    open.rollback().await.unwrap();
    drop((client, recording));
    outbox.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slice_past_the_window_goes_while_ids_are_recorded() {
    let outbox = TestOutbox::new().await;
    // A slice of two hours ago, with the horizon at its start.
    let start = minute_start() - time::Duration::hours(2);
    let end = start + time::Duration::minutes(1);
    slice_at(&outbox, "inbox_two_hours_ago", start).await;
    let client = outbox.pool.get().await.unwrap();
    let old = id_made_at(start + time::Duration::seconds(30));
    assert_eq!(record(&outbox, &[old]).await.unwrap(), HashSet::from([old]));
    assert_eq!(
        outbox
            .count("SELECT count(*) FROM inbox_two_hours_ago")
            .await,
        1
    );

    // Ids recorded, 20 a transaction, while the upkeep drops the slice.
    let recording = {
        let outbox_pool = outbox.pool.clone();
        tokio::spawn(async move {
            let mut recorded = 0;
            for _ in 0..200 {
                let ids: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
                let mut client = outbox_pool.get().await.unwrap();
                let tx = client.transaction().await.unwrap();
                let fresh = inbox::record(&tx, &ids).await.unwrap();
                tx.commit().await.unwrap();
                recorded += fresh.len();
            }
            recorded
        })
    };
    let hour = Slicing::for_retention(Duration::from_secs(3600));
    let upkeep = partitions::upkeep(&client, Table::Inbox, &hour)
        .await
        .unwrap();
    assert_eq!(recording.await.unwrap(), 4000);
    assert!(
        upkeep.dropped.contains(&"inbox_two_hours_ago".to_string()),
        "{upkeep:?}"
    );
    let gone: bool = client
        .query_one("SELECT to_regclass('inbox_two_hours_ago') IS NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(gone);
    assert_eq!(horizon(&outbox).await, inbox::first_id_at(end));
    // An id of the slice that went is past the window: recorded apart,
    // without an error.
    assert_eq!(record(&outbox, &[old]).await.unwrap(), HashSet::from([old]));
    assert_eq!(outbox.count("SELECT count(*) FROM inbox_untimed").await, 1);
    drop(client);
    outbox.cleanup().await;
}

#[tokio::test]
async fn ids_recorded_before_the_upgrade_still_count() {
    let database = TestOutbox::fresh_database().await;
    let mut before = outbox::schema::migrations();
    before
        .migrations
        .retain(|migration| migration.version() < 7);
    // The views made after the migrations are this release's.
    before.after = None;
    platform::db::migrate(&database, &[before], None)
        .await
        .unwrap();
    let client = platform::db::connect(&database).await.unwrap();
    // Inside the migration's first slice whenever the minute turns.
    let seen = id_made_at(OffsetDateTime::now_utc() + time::Duration::minutes(1));
    client
        .execute("INSERT INTO inbox (message_id) VALUES ($1)", &[&seen])
        .await
        .unwrap();
    let outbox = TestOutbox::on(database).await;
    let new = Uuid::now_v7();
    assert_eq!(
        record(&outbox, &[seen, new]).await.unwrap(),
        HashSet::from([new])
    );
    drop(client);
    outbox.cleanup().await;
}
