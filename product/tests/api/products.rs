//! Each endpoint's happy path.

use serde_json::{Value, json};

use crate::helpers::{error_code, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_is_created_read_listed_changed_and_deleted() {
    let app = spawn_app().await;
    let created = app
        .post_json(
            "/products",
            json!({"name": "Green tea", "price": 450, "stock": 12}),
        )
        .await;
    assert_eq!(created.status(), 201);
    let location = created.headers()["location"].to_str().unwrap().to_owned();
    let product: Value = created.json().await.unwrap();
    let id = product["id"].as_i64().unwrap();
    assert_eq!(location, format!("/products/{id}"));
    assert_eq!(
        (
            product["name"].as_str(),
            product["price"].as_i64(),
            product["stock"].as_i64()
        ),
        (Some("Green tea"), Some(450), Some(12))
    );
    assert!(product["created_at"].is_string() && product["updated_at"].is_string());

    let read: Value = app.get_product(id).await.json().await.unwrap();
    assert_eq!(read, product);

    let replaced = app
        .client
        .put(app.url(&format!("/products/{id}")))
        .json(&json!({"name": "Sencha", "price": 500, "stock": 20}))
        .send()
        .await
        .unwrap();
    assert_eq!(replaced.status(), 200);
    assert_eq!(app.row(id).await, Some(("Sencha".into(), 500, 20)));

    let patched: Value = app
        .client
        .patch(app.url(&format!("/products/{id}")))
        .json(&json!({"price": 550}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (patched["name"].as_str(), patched["price"].as_i64()),
        (Some("Sencha"), Some(550))
    );
    assert!(patched["version"].as_i64() > product["version"].as_i64());

    let deleted = app
        .client
        .delete(app.url(&format!("/products/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    assert_eq!(app.get_product(id).await.status(), 404);
    assert_eq!(app.row(id).await, None);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_come_in_id_order_with_the_cursor_of_the_next() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            app.create_product(&format!("p{i}"), 100 + i, 1).await["id"]
                .as_i64()
                .unwrap(),
        );
    }
    let first: Value = app
        .client
        .get(app.url("/products?limit=2"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let page_ids: Vec<i64> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect();
    assert_eq!(page_ids, ids[..2]);
    assert_eq!(first["next_after"].as_i64(), Some(ids[1]));

    let rest: Value = app
        .client
        .get(app.url(&format!("/products?limit=10&after={}", ids[1])))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rest_ids: Vec<i64> = rest["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_i64().unwrap())
        .collect();
    assert_eq!(rest_ids, ids[2..]);
    assert!(rest["next_after"].is_null());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_on_both_listeners_and_readiness_and_metrics_on_the_admin_one_only() {
    let app = spawn_app().await;
    let openapi: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(openapi["openapi"], "3.0.3");
    assert!(openapi["paths"]["/products/{id}"]["patch"].is_object());
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    for path in ["/readyz", "/metrics"] {
        let public = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(public.status(), 404, "{path} is not on the public port");
    }
    let admin_health = app.admin_get("/healthz").await;
    assert_eq!(admin_health.status(), 200);
    let ready = app.admin_get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(
        (body["postgres"].as_str(), body["redis"].as_str()),
        (Some("up"), Some("up"))
    );
    // Which broker node each connection is on (after a failover: the next
    // of the AMQP_URL list).
    let node = outbox::broker::describe(&testkit::amqp_url());
    assert!(
        body["brokers"].as_object().is_some_and(|brokers| brokers
            .values()
            .any(|on| on.as_str() == Some(node.as_str()))),
        "{body}"
    );
    // Which database server the pool reached, as the server tells it (with
    // a multi-host URL: the primary).
    let server = testkit::server_addr(&testkit::database_url("postgres"));
    assert!(
        body["databases"]["product"]
            .as_str()
            .is_some_and(|on| on.starts_with(&format!("{server}/product_test_"))),
        "{body}"
    );

    let id = app.create_product("Metric", 1, 1).await["id"]
        .as_i64()
        .unwrap();
    app.get_product(id).await;
    app.get_product(id).await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains(r#"http_requests_total{route="/products",status="201"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"http_requests_total{route="/products/:id",status="200"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"product_cache_lookups_total{result="miss"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"product_cache_lookups_total{result="hit"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("http_request_duration_seconds_bucket"),
        "{metrics}"
    );
    // Readiness as metrics, checked at the scrape.
    for line in [
        "service_ready 1",
        r#"dependency_up{dependency="postgres"} 1"#,
        r#"dependency_up{dependency="redis"} 1"#,
        r#"dependency_up{dependency="rabbitmq"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from {metrics}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn product_writes_reach_the_broker_through_the_outbox() {
    let app = spawn_app().await;
    let id = app.create_product("Evented", 10, 1).await["id"]
        .as_i64()
        .unwrap();
    app.client
        .delete(app.url(&format!("/products/{id}")))
        .send()
        .await
        .unwrap();
    let pool = app.pool.clone();
    app.eventually("both product events are published", || {
        let pool = pool.clone();
        async move {
            let client = pool.get().await.unwrap();
            let row = client
                .query_one("SELECT count(*) FILTER (WHERE id NOT IN (SELECT id FROM outbox_pending)), count(*) FROM outbox WHERE event_type LIKE 'product.%'", &[])
                .await
                .unwrap();
            row.get::<_, i64>(0) == 2 && row.get::<_, i64>(1) == 2
        }
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_retried_with_its_key_returns_the_first_product() {
    let app = spawn_app().await;
    let create = |body: Value, key: &'static str| {
        app.client
            .post(app.url("/products"))
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let body = json!({"name": "Matcha", "price": 900, "stock": 5});
    let first = create(body.clone(), "create-1").await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();

    // The same key and body, laid out differently: the same product, 200.
    let again = create(
        json!({"stock": 5, "price": 900, "name": "Matcha"}),
        "create-1",
    )
    .await
    .unwrap();
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);

    let other = create(
        json!({"name": "Matcha", "price": 901, "stock": 5}),
        "create-1",
    )
    .await
    .unwrap();
    assert_eq!(error_code(other, 422).await, "idempotency_key_reused");

    // Retries racing each other still create one product.
    let racing = futures_util::future::join_all((0..10).map(|_| {
        create(
            json!({"name": "Hojicha", "price": 300, "stock": 1}),
            "create-2",
        )
    }))
    .await;
    let ids: std::collections::HashSet<i64> =
        futures_util::future::join_all(racing.into_iter().map(|response| async {
            response.unwrap().json::<Value>().await.unwrap()["id"]
                .as_i64()
                .unwrap()
        }))
        .await
        .into_iter()
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(app.count("SELECT count(*) FROM products").await, 2);
    assert_eq!(
        app.count("SELECT count(*) FROM outbox WHERE event_type = 'product.upserted'")
            .await,
        2,
        "a repeated create published an event"
    );

    // Once its product is deleted, a retry says so and creates nothing.
    let id = first["id"].as_i64().unwrap();
    let deleted = app
        .client
        .delete(app.url(&format!("/products/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let after_delete = create(body, "create-1").await.unwrap();
    assert_eq!(error_code(after_delete, 404).await, "product_not_found");
    assert_eq!(app.count("SELECT count(*) FROM products").await, 1);
    app.stop().await;
}
