//! The order service's own upkeep of the tables that grow with every
//! order: small enough not to stall the commits beside it.

use crate::helpers::spawn_pipeline;

/// A default `ANALYZE` of a table of millions reads 30,000 of its pages
/// back (8 s of the reservations' on the soak's machine, the commits'
/// WAL held up meanwhile); each column's statistics target keeps the
/// sample at 3,000 rows, and a column added later without one would bring
/// it back to 30,000.
#[tokio::test]
async fn orders_and_their_items_are_analyzed_from_a_small_sample() {
    let pipeline = spawn_pipeline().await;
    for table in ["orders", "order_items"] {
        let sample: i64 = pipeline
            .stores
            .orders
            .query_one(testkit::ANALYZE_SAMPLE_ROWS_SQL, &[&table])
            .await
            .unwrap()
            .get(0);
        assert_eq!(sample, 3_000, "{table}");
    }
    pipeline.stop().await;
}
