//! Stock: restocks through an idempotency key.

use serde_json::{Value, json};

use crate::helpers::{error_code, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restock_applies_once_per_idempotency_key() {
    let app = spawn_app().await;
    let id = app.create_product("Restocked", 100, 5).await["id"]
        .as_i64()
        .unwrap();
    let restock = |key: &'static str, delta: i64| {
        app.client
            .post(app.url(&format!("/products/{id}/stock")))
            .header("Idempotency-Key", key)
            .json(&json!({"delta": delta}))
            .send()
    };
    let first: Value = restock("restock-1", 10)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["stock"], 15);
    let again = restock("restock-1", 10).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(
        app.row(id).await.unwrap().2,
        15,
        "a repeated key applied twice"
    );
    assert_eq!(
        error_code(restock("restock-1", 11).await.unwrap(), 422).await,
        "idempotency_key_reused"
    );
    assert_eq!(
        error_code(restock("restock-2", -16).await.unwrap(), 422).await,
        "insufficient_stock"
    );
    assert_eq!(
        restock("restock-2", -15).await.unwrap().status(),
        200,
        "a failed attempt must not burn its key"
    );
    assert_eq!(app.row(id).await.unwrap().2, 0);
    let served: Value = app.get_product(id).await.json().await.unwrap();
    assert_eq!(served["stock"], 0);
    assert_eq!(app.counter(id).await, Some(0));
    let missing_key = app
        .client
        .post(app.url(&format!("/products/{id}/stock")))
        .json(&json!({"delta": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(missing_key, 400).await,
        "missing_idempotency_key"
    );
    app.stop().await;
}

fn order_created(items: &[(i64, i64)]) -> outbox::envelope::Envelope {
    let order_id = uuid::Uuid::now_v7();
    let payload = outbox::events::OrderCreated {
        order_id,
        items: items
            .iter()
            .map(|&(product_id, quantity)| outbox::events::OrderItem {
                product_id,
                quantity,
            })
            .collect(),
    };
    outbox::envelope::Envelope {
        id: uuid::Uuid::now_v7(),
        event_type: outbox::events::ORDER_CREATED.into(),
        aggregate_id: order_id.to_string(),
        occurred_at: time::OffsetDateTime::now_utc(),
        payload: serde_json::value::RawValue::from_string(serde_json::to_string(&payload).unwrap())
            .unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_order_created_delivered_twice_moves_stock_once() {
    let app = spawn_app().await;
    let id = app.create_product("Once", 100, 10).await["id"]
        .as_i64()
        .unwrap();
    let order = order_created(&[(id, 3)]);
    app.publish_order_created(&order).await;
    app.publish_order_created(&order).await;
    app.eventually("the order is decided", || async {
        app.count("SELECT count(*) FROM reservations").await == 1
    })
    .await;
    app.eventually("the copy is recognised as a duplicate", || async {
        let metrics = app.metrics().await;
        // At least the copy; a batch retried after a failure makes more.
        metrics.lines().any(|line| {
            line.starts_with("inbox_events_total{")
                && line.contains(r#"outcome="duplicate""#)
                && line.rsplit(' ').next().and_then(|n| n.parse::<u64>().ok()) >= Some(1)
        })
    })
    .await;
    assert_eq!(app.row(id).await.unwrap().2, 7, "stock moved twice");
    // Each copy is answered, with the one verdict recorded.
    app.eventually("both copies are answered", || async {
        app.count("SELECT count(*) FROM outbox WHERE event_type = 'stock.reserved'")
            .await
            == 2
    })
    .await;
    app.eventually("the counter follows", || async {
        app.counter(id).await == Some(7)
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decided_order_sent_again_is_answered_with_its_recorded_verdict() {
    let app = spawn_app().await;
    let id = app.create_product("Scarce", 100, 2).await["id"]
        .as_i64()
        .unwrap();
    let reserved = order_created(&[(id, 2)]);
    let rejected = order_created(&[(id, 1)]);
    for order in [&reserved, &rejected] {
        app.publish_order_created(order).await;
    }
    app.eventually("both orders are decided", || async {
        app.count("SELECT count(*) FROM reservations").await == 2
    })
    .await;
    // Restocked meanwhile: a second decision would now reserve the
    // rejected order. The copies get the recorded verdicts instead.
    app.client
        .post(app.url(&format!("/products/{id}/stock")))
        .header("Idempotency-Key", "restock-1")
        .json(&json!({"delta": 10}))
        .send()
        .await
        .unwrap();
    for order in [&reserved, &rejected] {
        app.publish_order_created(order).await;
    }
    app.eventually("every copy is answered", || async {
        app.count("SELECT count(*) FROM outbox WHERE event_type LIKE 'stock.%'")
            .await
            == 4
    })
    .await;
    let client = app.pool.get().await.unwrap();
    let rejections = client
        .query(
            "SELECT payload->>'order_id', payload->>'reason', (payload->>'product_id')::int8 \
             FROM outbox WHERE event_type = 'stock.rejected'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rejections.len(), 2);
    for row in rejections {
        let (order, reason, product): (String, String, i64) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(
            (order.as_str(), reason.as_str(), product),
            (rejected.aggregate_id.as_str(), "insufficient_stock", id)
        );
    }
    assert_eq!(app.row(id).await.unwrap().2, 10, "a copy moved stock");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_item_order_short_of_one_item_changes_no_stock() {
    let app = spawn_app().await;
    let plenty = app.create_product("Plenty", 100, 10).await["id"]
        .as_i64()
        .unwrap();
    let scarce = app.create_product("Scarce", 100, 1).await["id"]
        .as_i64()
        .unwrap();
    app.publish_order_created(&order_created(&[(plenty, 2), (scarce, 2)]))
        .await;
    app.eventually("the order is decided", || async {
        app.count("SELECT count(*) FROM reservations").await == 1
    })
    .await;
    assert_eq!(app.count("SELECT count(*) FROM reservations WHERE status = 'rejected' AND reason = 'insufficient_stock'").await, 1);
    assert_eq!(
        (
            app.row(plenty).await.unwrap().2,
            app.row(scarce).await.unwrap().2
        ),
        (10, 1)
    );
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE event_type = 'stock.rejected'")
            .await,
        1
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_are_dead_lettered_and_never_stall_the_consumer() {
    let app = spawn_app().await;
    let id = app.create_product("Sturdy", 100, 10).await["id"]
        .as_i64()
        .unwrap();
    let gone = app.create_product("Gone", 100, 10).await["id"]
        .as_i64()
        .unwrap();
    app.client
        .delete(app.url(&format!("/products/{gone}")))
        .send()
        .await
        .unwrap();

    app.publish_raw(b"{ not json").await;
    let mut wrong_type = order_created(&[(id, 1)]);
    wrong_type.event_type = "order.cancelled".into();
    app.publish_order_created(&wrong_type).await;
    let mut missing_items = order_created(&[(id, 1)]);
    missing_items.payload = serde_json::value::RawValue::from_string(format!(
        r#"{{"order_id":"{}"}}"#,
        uuid::Uuid::now_v7()
    ))
    .unwrap();
    app.publish_order_created(&missing_items).await;
    let huge: Vec<(i64, i64)> = (1..=20_000).map(|product| (product, 1)).collect();
    app.publish_order_created(&order_created(&huge)).await;
    // A valid order for a deleted product is not poison: it is decided.
    app.publish_order_created(&order_created(&[(gone, 1)]))
        .await;
    app.publish_order_created(&order_created(&[(id, 2)])).await;

    app.eventually("the good orders are decided", || async {
        app.count("SELECT count(*) FROM reservations").await == 2
    })
    .await;
    assert_eq!(
        app.count("SELECT count(*) FROM reservations WHERE reason = 'unknown_product'")
            .await,
        1
    );
    assert_eq!(app.row(id).await.unwrap().2, 8);
    app.eventually("the four poison messages are dead-lettered", || async {
        app.dead_letters().await == 4
    })
    .await;
    app.eventually("their number shows in /metrics", || async {
        app.metrics().await.lines().any(|line| {
            line.starts_with("dead_letters{")
                && line.contains("order-created")
                && line.ends_with(" 4")
        })
    })
    .await;
    app.stop().await;
}
