//! Bad input gets the design's error body and changes nothing.

use serde_json::json;

use crate::helpers::{TestApp, error_code, spawn_app};

/// Sends a request, checks status and code, and that the table is as before.
async fn refused(app: &TestApp, request: reqwest::RequestBuilder, status: u16, code: &str) {
    let before = app.table_snapshot().await;
    let response = request.send().await.unwrap();
    assert_eq!(error_code(response, status).await, code);
    assert_eq!(
        app.table_snapshot().await,
        before,
        "a refused request changed the table"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_and_wrong_types_get_400() {
    let app = spawn_app().await;
    let id = app.create_product("Existing", 100, 5).await["id"]
        .as_i64()
        .unwrap();
    let post = || {
        app.client
            .post(app.url("/products"))
            .header("content-type", "application/json")
    };
    refused(&app, post().body("{not json"), 400, "malformed_body").await;
    refused(&app, post().body("[1, 2]"), 400, "malformed_body").await;
    refused(
        &app,
        post().body(r#"{"name": 5, "price": 1, "stock": 1}"#),
        400,
        "malformed_body",
    )
    .await;
    refused(
        &app,
        post().body(r#"{"name": "x", "price": "1", "stock": 1}"#),
        400,
        "malformed_body",
    )
    .await;
    refused(
        &app,
        post().body(r#"{"name": "x", "price": 1.5, "stock": 1}"#),
        400,
        "malformed_body",
    )
    .await;
    refused(
        &app,
        post().body(r#"{"name": "x", "price": 1, "stock": 1, "colour": "red"}"#),
        400,
        "malformed_body",
    )
    .await;
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    refused(&app, post().body(deep), 400, "malformed_body").await;
    let put = app
        .client
        .put(app.url(&format!("/products/{id}")))
        .header("content-type", "application/json");
    refused(&app, put.body("nope"), 400, "malformed_body").await;
    refused(
        &app,
        app.client
            .post(app.url("/products"))
            .header("content-type", "text/plain")
            .body("{}"),
        415,
        "unsupported_media_type",
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_values_get_422() {
    let app = spawn_app().await;
    let id = app.create_product("Existing", 100, 5).await["id"]
        .as_i64()
        .unwrap();
    let post = |body| app.client.post(app.url("/products")).json(&body);
    refused(
        &app,
        post(json!({"name": "", "price": 1, "stock": 1})),
        422,
        "invalid_name",
    )
    .await;
    refused(
        &app,
        post(json!({"name": "n".repeat(200), "price": 1, "stock": 1})),
        422,
        "invalid_name",
    )
    .await;
    refused(
        &app,
        post(json!({"name": "x", "price": -1, "stock": 1})),
        422,
        "invalid_price",
    )
    .await;
    refused(
        &app,
        post(json!({"name": "x", "price": 1, "stock": -1})),
        422,
        "invalid_stock",
    )
    .await;
    refused(
        &app,
        post(json!({"name": "x", "price": 1, "stock": 1_000_000_001})),
        422,
        "invalid_stock",
    )
    .await;
    refused(
        &app,
        post(json!({"name": "x", "price": 1})),
        422,
        "invalid_value",
    )
    .await;
    let huge = app
        .client
        .post(app.url("/products"))
        .header("content-type", "application/json");
    refused(
        &app,
        huge.body(r#"{"name": "x", "price": 1, "stock": 1e300}"#),
        422,
        "invalid_stock",
    )
    .await;
    let patch = |body| {
        app.client
            .patch(app.url(&format!("/products/{id}")))
            .json(&body)
    };
    refused(&app, patch(json!({})), 422, "empty_patch").await;
    refused(&app, patch(json!({"price": -5})), 422, "invalid_price").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ids_routes_and_methods_get_404_and_405() {
    let app = spawn_app().await;
    app.create_product("Existing", 100, 5).await;
    refused(
        &app,
        app.client.get(app.url("/products/999999")),
        404,
        "product_not_found",
    )
    .await;
    refused(
        &app,
        app.client.get(app.url("/products/abc")),
        404,
        "product_not_found",
    )
    .await;
    refused(
        &app,
        app.client.get(app.url("/products/-1")),
        404,
        "product_not_found",
    )
    .await;
    refused(
        &app,
        app.client.get(app.url("/products/99999999999999999999999")),
        404,
        "product_not_found",
    )
    .await;
    refused(
        &app,
        app.client
            .put(app.url("/products/999999"))
            .json(&json!({"name": "x", "price": 1, "stock": 1})),
        404,
        "product_not_found",
    )
    .await;
    refused(
        &app,
        app.client.delete(app.url("/products/999999")),
        404,
        "product_not_found",
    )
    .await;
    refused(
        &app,
        app.client.get(app.url("/nowhere")),
        404,
        "route_not_found",
    )
    .await;
    let response = app
        .client
        .delete(app.url("/products"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "GET, POST");
    assert_eq!(error_code(response, 405).await, "method_not_allowed");
    refused(
        &app,
        app.client.post(app.url("/products/1")),
        405,
        "method_not_allowed",
    )
    .await;
    refused(
        &app,
        app.client.get(app.url("/products?limit=abc")),
        400,
        "invalid_query",
    )
    .await;
    refused(
        &app,
        app.client.get(app.url("/products?limit=0")),
        400,
        "invalid_query",
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_64_kib_gets_413() {
    let app = spawn_app().await;
    let name = "x".repeat(70 * 1024);
    refused(
        &app,
        app.client
            .post(app.url("/products"))
            .json(&json!({"name": name, "price": 1, "stock": 1})),
        413,
        "body_too_large",
    )
    .await;
    // The service still answers on new connections.
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    app.stop().await;
}
