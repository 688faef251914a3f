//! The vacuum fallback (servers with autovacuum off) decides as autovacuum
//! would: by each table's own storage parameters where it has them, by
//! the server's settings otherwise.

use std::time::Duration;

use crate::helpers::TestOutbox;

#[tokio::test]
async fn a_tables_own_thresholds_decide_its_vacuum() {
    let outbox = TestOutbox::new().await;
    let client = outbox.pool.get().await.unwrap();
    // Analyze thresholds out of reach, so only the vacuums are due.
    client
        .batch_execute(
            "CREATE TABLE small_steps (n int) WITH (autovacuum_vacuum_insert_threshold = 100, \
                 autovacuum_vacuum_insert_scale_factor = 0, autovacuum_analyze_threshold = 1000000); \
             CREATE TABLE server_default (n int) WITH (autovacuum_analyze_threshold = 1000000); \
             CREATE TABLE not_yet (n int) WITH (autovacuum_analyze_threshold = 1000000); \
             INSERT INTO small_steps SELECT generate_series(1, 500); \
             INSERT INTO server_default SELECT generate_series(1, 2000); \
             INSERT INTO not_yet SELECT generate_series(1, 500)",
        )
        .await
        .unwrap();
    drop(client);
    let tables = ["small_steps", "server_default", "not_yet"];
    // The inserting backend reports its counts within a second or so.
    let reader = outbox.pool.get().await.unwrap();
    let mut due = Vec::new();
    for _ in 0..300 {
        due = outbox::vacuum::due(&reader, &tables).await.unwrap();
        if due.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 500 rows pass small_steps' own 100; 2,000 pass the server's 1,000 +
    // 20%; 500 do not.
    assert_eq!(due, ["VACUUM server_default", "VACUUM small_steps"]);
}
