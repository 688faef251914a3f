//! Bad order requests get the design's error body and write nothing.

use serde_json::{Value, json};

use crate::helpers::{TestPipeline, error_code, spawn_pipeline};

async fn refused(
    pipeline: &TestPipeline,
    request: reqwest::RequestBuilder,
    status: u16,
    code: &str,
) {
    let before = pipeline
        .stores
        .orders
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    let response = request.send().await.unwrap();
    let actual = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_code(actual, &body, status), code);
    let after = pipeline
        .stores
        .orders
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(before, after, "a refused request wrote an order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_orders_are_refused_and_write_nothing() {
    let mut pipeline = spawn_pipeline().await;
    let id = pipeline.create_product("Real", 100, 10).await;
    let url = format!("{}/orders", pipeline.order_address);
    let raw = |body: &'static str| {
        pipeline
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
    };
    refused(&pipeline, raw("{nope"), 400, "malformed_body").await;
    refused(
        &pipeline,
        raw(r#"{"product_id": "1", "quantity": 1}"#),
        400,
        "malformed_body",
    )
    .await;
    refused(
        &pipeline,
        raw(r#"{"product_id": 1, "quantity": 1, "note": "x"}"#),
        400,
        "malformed_body",
    )
    .await;
    refused(
        &pipeline,
        pipeline.order_request(&json!({"product_id": id, "quantity": 0})),
        422,
        "invalid_quantity",
    )
    .await;
    refused(
        &pipeline,
        pipeline.order_request(&json!({"product_id": id, "quantity": 10_001})),
        422,
        "invalid_quantity",
    )
    .await;
    refused(
        &pipeline,
        pipeline.order_request(&json!({"product_id": id, "quantity": -5})),
        422,
        "invalid_quantity",
    )
    .await;
    refused(
        &pipeline,
        raw(r#"{"product_id": 1, "quantity": 1e30}"#),
        422,
        "invalid_quantity",
    )
    .await;
    refused(
        &pipeline,
        pipeline.order_request(&json!({"items": []})),
        422,
        "invalid_items",
    )
    .await;
    let dup =
        json!({"items": [{"product_id": id, "quantity": 1}, {"product_id": id, "quantity": 1}]});
    refused(
        &pipeline,
        pipeline.order_request(&dup),
        422,
        "duplicate_product",
    )
    .await;
    let bad_key = pipeline
        .order_request(&json!({"product_id": id, "quantity": 1}))
        .header("Idempotency-Key", "");
    refused(&pipeline, bad_key, 400, "invalid_idempotency_key").await;
    refused(
        &pipeline,
        pipeline.client.get(format!("{url}/not-a-uuid")),
        404,
        "order_not_found",
    )
    .await;
    refused(
        &pipeline,
        pipeline
            .client
            .get(format!("{url}/0193a0c4-0000-7000-8000-000000000000")),
        404,
        "order_not_found",
    )
    .await;
    refused(
        &pipeline,
        pipeline.client.delete(&url),
        405,
        "method_not_allowed",
    )
    .await;
    refused(
        &pipeline,
        pipeline.client.get(format!("{url}?status=LOST")),
        400,
        "invalid_query",
    )
    .await;
    let big = format!(
        r#"{{"items": [{}]}}"#,
        vec![r#"{"product_id": 1, "quantity": 1}"#; 3000].join(",")
    );
    refused(
        &pipeline,
        pipeline
            .client
            .post(&url)
            .header("content-type", "application/json")
            .body(big),
        413,
        "body_too_large",
    )
    .await;
    pipeline.assert_invariants().await;
    pipeline.stop().await;
}
