//! No order stays PENDING for want of an operator: a deleted queue is
//! declared again, and an order whose messages were lost is re-driven.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{spawn_pipeline, spawn_pipeline_with};

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
            "SELECT count(*) FROM outbox_refused WHERE set_aside_at IS NOT NULL",
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_reply_was_lost_is_decided_after_a_redrive() {
    let mut pipeline = spawn_pipeline_with(&[("ORDER_REDRIVE_AFTER_SECS", "1")]).await;
    let product = pipeline.create_product("Lost reply", 100, 10).await;
    // The product service without its relay: its replies stay in its outbox.
    pipeline.stop_product().await;
    pipeline
        .start_product_with(|config| config.pipeline.relay_enabled = false)
        .await;
    let (status, order) = pipeline
        .place(json!({"product_id": product, "quantity": 3}))
        .await;
    assert_eq!(status, 201, "{order}");
    let order_id = order["id"].as_str().unwrap().to_owned();
    let mut decided = false;
    for _ in 0..200 {
        let replies: i64 = pipeline
            .stores
            .products
            .query_one(
                "SELECT count(*) FROM outbox WHERE event_type LIKE 'stock.%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if replies > 0 {
            decided = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(decided, "the product service never decided the order");
    // Its reply is lost: the relay's cursor moved past it, never sent.
    pipeline
        .stores
        .products
        .execute(
            "UPDATE outbox_relay_cursor SET \
                 released_id = array_fill((SELECT max(id) FROM outbox), ARRAY[16]), \
                 released_snapshot = array_fill(pg_current_snapshot(), ARRAY[16])",
            &[],
        )
        .await
        .unwrap();
    pipeline.stop_product().await;
    pipeline.start_product().await;

    assert!(
        pipeline.wait_until_decided(Duration::from_secs(30)).await,
        "the order stayed PENDING"
    );
    assert_eq!(pipeline.order(&order_id).await["status"], "CONFIRMED");
    assert!(pipeline.metric("order_redriven_total").await >= 1);
    pipeline.assert_invariants().await;
    pipeline.stop().await;
}
