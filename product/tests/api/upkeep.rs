//! The product service's own upkeep of the tables that grow with every
//! order: small enough not to stall the commits beside it.

use crate::helpers::spawn_app;

/// A default `ANALYZE` of 5.6 million reservations read 30,000 of their
/// pages back and held the commits' WAL up for 8 s; each column's
/// statistics target keeps the sample at 3,000 rows, and a column added
/// later without one would bring it back to 30,000.
#[tokio::test]
async fn reservations_are_analyzed_from_a_small_sample() {
    let app = spawn_app().await;
    let client = app.pool.get().await.unwrap();
    let sample: i64 = client
        .query_one(testkit::ANALYZE_SAMPLE_ROWS_SQL, &[&"reservations"])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sample, 3_000);
    app.stop().await;
}
