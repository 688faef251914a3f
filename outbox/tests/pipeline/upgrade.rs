//! A database migrated before the outbox became append-only, the way it
//! was: the outbox library's migrations recorded in the service's history,
//! rows still to send and a set-aside one in the old table. Upgraded, the
//! library's new migration runs (it is numbered below the service's, which
//! one shared history would never apply), the rows still to send go out
//! once, and the set-aside row stays set aside.

use platform::db::{MigrationSet, SERVICE_HISTORY};

use crate::helpers::TestOutbox;

#[tokio::test]
async fn a_database_migrated_before_keeps_what_it_had_to_send() {
    let database = TestOutbox::fresh_database().await;
    let mut before = outbox::schema::migrations().migrations;
    before.retain(|migration| migration.version() < 3);
    before.push(TestOutbox::effects_migration());
    let old_layout = MigrationSet {
        history: SERVICE_HISTORY,
        migrations: before,
        before: None,
        after: None,
        grants: &[],
    };
    platform::db::migrate(&database, &[old_layout], None)
        .await
        .unwrap();
    let client = platform::db::connect(&database).await.unwrap();
    client
        .batch_execute(
            "INSERT INTO outbox (message_id, aggregate_id, partition, event_type, payload, published_at) \
             SELECT gen_random_uuid(), 'agg-' || n, n % 16, 'order.created', \
                 jsonb_build_object('amount', n), CASE WHEN n <= 3 THEN now() END \
             FROM generate_series(1, 8) n; \
             UPDATE outbox SET set_aside_at = now(), attempts = 5, last_error = 'refused (test)' \
             WHERE aggregate_id = 'agg-8'",
        )
        .await
        .unwrap();

    let outbox = TestOutbox::on(database).await;
    let histories: (Vec<i32>, Vec<i32>) = (
        versions(&client, outbox::schema::HISTORY).await,
        versions(&client, SERVICE_HISTORY).await,
    );
    // Embedded in the order of their file names (V10 before V1); run, and
    // recorded, in the order of their versions.
    let mut library: Vec<i32> = outbox::schema::migrations()
        .migrations
        .iter()
        .map(|migration| migration.version())
        .collect();
    library.sort_unstable();
    assert!(library.starts_with(&[1, 2, 3]), "{library:?}");
    assert_eq!(histories, (library, vec![100]));
    // Rows 4 to 7 were still to send; 8 is set aside; 1 to 3 were sent.
    assert_eq!(outbox.count("SELECT count(*) FROM outbox_pending").await, 4);
    let mut relay = outbox.relay(outbox.relay_config());
    assert_eq!(outbox.drain(&mut relay).await, 4);
    let mut sent: Vec<String> = outbox
        .take_events(&outbox.topology.order_created_queue(), 5)
        .await
        .into_iter()
        .map(|event| event.aggregate_id)
        .collect();
    sent.sort();
    assert_eq!(sent, ["agg-4", "agg-5", "agg-6", "agg-7"]);
    let stats = outbox::stats::collect(&client).await.unwrap();
    assert_eq!((stats.pending.rows, stats.pending.set_aside), (0, 1));
    drop(client);
    outbox.cleanup().await;
}

async fn versions(client: &tokio_postgres::Client, history: &str) -> Vec<i32> {
    client
        .query(
            &format!("SELECT version FROM {history} ORDER BY version"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// A database an earlier release's relay left with a row below its
/// cursor that the cursor's snapshot neither saw nor listed (the row it
/// would skip for good): the upgrade lists its transaction in the cursor,
/// and the row goes out.
#[tokio::test]
async fn a_row_an_earlier_cursor_passed_over_is_sent_after_the_upgrade() {
    let database = TestOutbox::fresh_database().await;
    let mut before = outbox::schema::migrations();
    before
        .migrations
        .retain(|migration| migration.version() < 9);
    before.after = None;
    platform::db::migrate(&database, &[before], None)
        .await
        .unwrap();
    let client = platform::db::connect(&database).await.unwrap();
    // The snapshot an old relay read under, before the row's transaction
    // took its id; then the row commits, and the cursor passes its id.
    let seen: String = client
        .query_one("SELECT pg_current_snapshot()::text", &[])
        .await
        .unwrap()
        .get(0);
    client
        .batch_execute(
            "INSERT INTO outbox (message_id, aggregate_id, partition, event_type, payload) \
             VALUES (gen_random_uuid(), 'passed-over', 3, 'order.created', '{\"amount\": 1}')",
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE outbox_cursor SET \
                 released_id = array_fill((SELECT max(id) FROM outbox), ARRAY[16]), \
                 released_snapshot = array_fill($1::text::pg_snapshot, ARRAY[16])",
            &[&seen],
        )
        .await
        .unwrap();
    let waiting: i64 = client
        .query_one("SELECT count(*) FROM outbox_pending", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(waiting, 0, "the earlier release counted the row as sent");

    let outbox = TestOutbox::on(database).await;
    assert_eq!(outbox.count("SELECT count(*) FROM outbox_pending").await, 1);
    let mut relay = outbox.relay(outbox.relay_config());
    assert_eq!(
        outbox.drain(&mut relay).await,
        1,
        "the row passed over stays unsent"
    );
    let sent = outbox
        .take_events(&outbox.topology.order_created_queue(), 2)
        .await;
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].aggregate_id, "passed-over");
    drop(client);
    outbox.cleanup().await;
}
