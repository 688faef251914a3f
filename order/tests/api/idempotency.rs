//! Idempotency-Key: a retry returns the first order, never a second one.

use futures_util::future::join_all;
use serde_json::json;

use crate::helpers::{error_code, spawn_pipeline, spawn_pipeline_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_key_returns_the_first_order_and_another_body_is_422() {
    let mut pipeline = spawn_pipeline().await;
    let id = pipeline.create_product("Keyed", 100, 10).await;
    let send = |body: serde_json::Value| {
        let request = pipeline
            .order_request(&body)
            .header("Idempotency-Key", "order-key-1");
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let (first_status, first) = send(json!({"product_id": id, "quantity": 2})).await;
    assert_eq!(first_status, 201);
    let (again_status, again) = send(json!({"items": [{"product_id": id, "quantity": 2}]})).await;
    assert_eq!(again_status, 200, "{again}");
    assert_eq!(again["id"], first["id"]);
    let (other_status, other) = send(json!({"product_id": id, "quantity": 3})).await;
    assert_eq!(
        error_code(other_status, &other, 422),
        "idempotency_key_reused"
    );

    // Many retries of a new key at once still make one order.
    let racing = join_all((0..20).map(|_| {
        let request = pipeline
            .order_request(&json!({"product_id": id, "quantity": 1}))
            .header("Idempotency-Key", "order-key-2");
        async move {
            request
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()["id"]
                .clone()
        }
    }))
    .await;
    assert!(racing.iter().all(|order| *order == racing[0]), "{racing:?}");
    // Two orders, and the items and events of those two only: the
    // retries' rows were never written.
    let counts = pipeline
        .stores
        .orders
        .query_one(
            "SELECT (SELECT count(*) FROM orders), (SELECT count(*) FROM order_items), \
                    (SELECT count(*) FROM outbox WHERE event_type = 'order.created')",
            &[],
        )
        .await
        .unwrap();
    let counts: (i64, i64, i64) = (counts.get(0), counts.get(1), counts.get(2));
    assert_eq!(counts, (2, 2, 2), "orders, items, events");
    pipeline.assert_invariants().await;
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_timed_out_waiting_for_its_commit_placed_nothing() {
    // With no time to wait, every request gives up before the writer takes
    // its job; the writer must then drop the job, not commit it.
    let mut pipeline = spawn_pipeline_with(&[("ORDER_REQUEST_TIMEOUT_MS", "0")]).await;
    let id = pipeline.create_product("Impatient", 100, 10).await;
    for _ in 0..5 {
        let (status, body) = pipeline
            .place(json!({"product_id": id, "quantity": 1}))
            .await;
        assert_eq!(error_code(status, &body, 503), "dependency_unavailable");
    }
    let mut expired = 0;
    for _ in 0..100 {
        expired = pipeline
            .metric("order_writer_jobs_total{outcome=\"expired\"}")
            .await;
        if expired >= 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(expired, 5, "the writer did not drop the expired jobs");
    let orders: i64 = pipeline
        .stores
        .orders
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(orders, 0, "an order answered 503 was written");
    pipeline.assert_invariants().await;
    pipeline.stop().await;
}
