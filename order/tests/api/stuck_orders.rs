//! No order stays PENDING for want of an operator: a deleted queue is
//! declared again, and an order whose messages were lost is re-driven.

use std::time::Duration;

use serde_json::json;

use crate::helpers::spawn_pipeline;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_placed_while_their_queue_was_deleted_are_all_decided() {
    let mut pipeline = spawn_pipeline().await;
    let product = pipeline.create_product("Requeued", 100, 1000).await;
    // One order through the whole loop: the relay's connection is up.
    let (status, _) = pipeline
        .place(json!({"product_id": product, "quantity": 1}))
        .await;
    assert_eq!(status, 201);
    assert!(pipeline.wait_until_decided(Duration::from_secs(20)).await);

    pipeline.stop_product().await;
    let connection = outbox::broker::connect(&testkit::amqp_url(), "test")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .queue_delete(
            pipeline.queue("product.order-created").as_str().into(),
            Default::default(),
        )
        .await
        .unwrap();
    connection.close(200, "done".into()).await.unwrap();
    for _ in 0..20 {
        let (status, body) = pipeline
            .place(json!({"product_id": product, "quantity": 1}))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    // Long enough for every refusal the relay would count against a row
    // (five, about 3 s of backoff) to set the rows aside.
    tokio::time::sleep(Duration::from_secs(6)).await;
    pipeline.start_product().await;

    assert!(
        pipeline.wait_until_decided(Duration::from_secs(60)).await,
        "orders stayed PENDING after their queue came back"
    );
    let set_aside: i64 = pipeline
        .stores
        .orders
        .query_one(
            "SELECT count(*) FROM outbox WHERE set_aside_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        set_aside, 0,
        "rows were set aside for the broker's refusals"
    );
    pipeline.assert_invariants().await;
    pipeline.stop().await;
}
