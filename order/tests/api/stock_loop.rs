//! End to end: orders over HTTP travel the whole loop and come back with
//! a verdict; the invariants hold after every test.

use futures_util::future::join_all;
use serde_json::json;

use crate::helpers::{error_code, spawn_pipeline, spawn_pipeline_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_hundred_fifty_concurrent_orders_against_stock_100_confirm_exactly_100() {
    let mut pipeline = spawn_pipeline().await;
    let id = pipeline.create_product("Limited", 250, 100).await;
    let placed =
        join_all((0..150).map(|_| pipeline.place(json!({"product_id": id, "quantity": 1})))).await;
    assert!(
        placed.iter().all(|(status, _)| *status == 201),
        "{placed:?}"
    );
    assert!(
        placed
            .iter()
            .all(|(_, order)| order["status"] == "PENDING" && order["total"] == 250)
    );
    let report = pipeline.assert_invariants().await;
    assert_eq!((report.confirmed, report.rejected), (100, 50));
    let client = pipeline
        .stores
        .products
        .query_one("SELECT stock FROM products WHERE id = $1", &[&id])
        .await
        .unwrap();
    assert_eq!(client.get::<_, i64>(0), 0);
    let rejected = pipeline
        .stores
        .orders
        .query_one(
            "SELECT count(*) FROM orders WHERE reason = 'insufficient_stock'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rejected.get::<_, i64>(0), 50);
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_comes_back_confirmed_and_one_short_of_stock_rejected_changing_nothing() {
    let mut pipeline = spawn_pipeline().await;
    let tea = pipeline.create_product("Tea", 450, 10).await;
    let cups = pipeline.create_product("Cups", 1200, 1).await;
    let (status, confirmed) = pipeline
        .place(json!({"items": [{"product_id": tea, "quantity": 2}, {"product_id": cups, "quantity": 1}]}))
        .await;
    assert_eq!(status, 201);
    assert_eq!(confirmed["total"], 2 * 450 + 1200);
    // Orders of different aggregates carry no order between them (two
    // relays may send them either way round): decide the first one first.
    pipeline.assert_invariants().await;
    let (_, rejected) = pipeline
        .place(json!({"items": [{"product_id": tea, "quantity": 1}, {"product_id": cups, "quantity": 1}]}))
        .await;
    pipeline.assert_invariants().await;
    let confirmed = pipeline.order(confirmed["id"].as_str().unwrap()).await;
    assert_eq!(
        (confirmed["status"].as_str(), confirmed["reason"].as_str()),
        (Some("CONFIRMED"), None)
    );
    assert!(confirmed["decided_at"].is_string());
    let rejected = pipeline.order(rejected["id"].as_str().unwrap()).await;
    assert_eq!(
        (rejected["status"].as_str(), rejected["reason"].as_str()),
        (Some("REJECTED"), Some("insufficient_stock"))
    );
    let stock: Vec<i64> = pipeline
        .stores
        .products
        .query("SELECT stock FROM products ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(stock, [8, 0], "the rejected order moved stock");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_ordered_the_moment_it_is_created_is_accepted_and_a_deleted_one_is_not() {
    let mut pipeline = spawn_pipeline().await;
    // No wait: the product.upserted event may not have reached the replica.
    let fresh = pipeline.create_product("Fresh", 99, 5).await;
    let (status, order) = pipeline
        .place(json!({"product_id": fresh, "quantity": 1}))
        .await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["items"][0]["unit_price"], 99);

    let (status, body) = pipeline
        .place(json!({"product_id": 987_654, "quantity": 1}))
        .await;
    assert_eq!(error_code(status, &body, 422), "unknown_product");
    // The stock of the product adds up while it exists...
    pipeline.assert_invariants().await;

    pipeline
        .client
        .delete(format!("{}/products/{fresh}", pipeline.product_address))
        .send()
        .await
        .unwrap();
    let mut refused = false;
    for _ in 0..100 {
        let (status, body) = pipeline
            .place(json!({"product_id": fresh, "quantity": 1}))
            .await;
        if status == 422 {
            assert_eq!(body["error"]["code"], "unknown_product");
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(refused, "orders for a deleted product are still accepted");
    // ...and once it is gone (its row with it), every order is decided.
    pipeline.initial.clear();
    let report = pipeline.assert_invariants().await;
    assert_eq!(report.pending, 0);
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_product_service_down_an_unknown_product_is_503_and_nothing_is_written() {
    let pipeline = spawn_pipeline_with(&[("PRODUCT_URL", "http://127.0.0.1:9")]).await;
    let (status, body) = pipeline
        .place(json!({"product_id": 1, "quantity": 1}))
        .await;
    assert_eq!(error_code(status, &body, 503), "dependency_unavailable");
    let orders = pipeline
        .stores
        .orders
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap();
    assert_eq!(orders.get::<_, i64>(0), 0);
    let outbox = pipeline
        .stores
        .orders
        .query_one("SELECT count(*) FROM outbox", &[])
        .await
        .unwrap();
    assert_eq!(outbox.get::<_, i64>(0), 0);
    pipeline.stop().await;
}
