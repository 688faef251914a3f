//! Orders belong to their caller (the token's issuer and subject), tried
//! from outside: every order route without a token and without its
//! scope; one subject reading, listing and re-keying another's orders;
//! support staff reading all, those placed before owners existed
//! included.

use serde_json::{Value, json};

use crate::helpers::{TestPipeline, error_code, spawn_pipeline};

/// A caller of the order API with one token.
struct As<'a> {
    pipeline: &'a TestPipeline,
    token: String,
}

impl<'a> As<'a> {
    fn new(pipeline: &'a TestPipeline, subject: &str, scopes: &str) -> Self {
        As {
            pipeline,
            token: testkit::issuer::issuer().token(subject, scopes),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.pipeline.order_address)
    }

    async fn place(&self, body: Value, key: Option<&str>) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .post(self.url("/orders"))
            .bearer_auth(&self.token)
            .json(&body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// The ids of the orders `GET /orders` lists, `query` appended.
    async fn listed(&self, query: &str) -> Vec<String> {
        let (status, body) = self.get(&format!("/orders{query}")).await;
        assert_eq!(status, 200, "{body}");
        let items = body["items"].as_array().unwrap();
        items
            .iter()
            .map(|order| order["id"].as_str().unwrap().to_owned())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_order_route_needs_a_token_with_its_scope() {
    let mut pipeline = spawn_pipeline().await;
    let product = pipeline.create_product("Guarded", 100, 10).await;
    let order = json!({"product_id": product, "quantity": 1});
    let anonymous = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", pipeline.order_address);
    let id = "0193a9e0-5c1e-7a6b-8f00-2d1c4b5e6f70";
    for (method, path) in [
        ("POST", "/orders".to_owned()),
        ("GET", "/orders".into()),
        ("GET", format!("/orders/{id}")),
    ] {
        let request = anonymous
            .request(method.parse().unwrap(), url(&path))
            .json(&order);
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{method} {path}");
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(!challenge.contains("error="), "{challenge}");
    }
    let reader = As::new(&pipeline, "reader", "orders.read");
    let (status, body) = reader.place(order.clone(), None).await;
    assert_eq!(error_code(status, &body, 403), "insufficient_scope");
    let placer = As::new(&pipeline, "placer", "orders.place");
    let (status, _) = placer.place(order, None).await;
    assert_eq!(status, 201);
    for path in ["/orders".to_owned(), format!("/orders/{id}")] {
        let (status, body) = placer.get(&path).await;
        assert_eq!(
            error_code(status, &body, 403),
            "insufficient_scope",
            "{path}"
        );
    }
    let catalog = As::new(&pipeline, "admin", "catalog.write");
    let (status, body) = catalog.get("/orders").await;
    assert_eq!(error_code(status, &body, 403), "insufficient_scope");
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_sees_and_rekeys_only_its_own_orders() {
    let mut pipeline = spawn_pipeline().await;
    let product = pipeline.create_product("Owned", 100, 100).await;
    let order = json!({"product_id": product, "quantity": 1});
    let alice = As::new(&pipeline, "alice", "orders.place orders.read");
    let bob = As::new(&pipeline, "bob", "orders.place orders.read");
    let support = As::new(&pipeline, "support", "orders.read_all");

    let (status, alices) = alice.place(order.clone(), Some("shared-key")).await;
    assert_eq!(status, 201);
    let alices = alices["id"].as_str().unwrap().to_owned();
    let (status, body) = bob.get(&format!("/orders/{alices}")).await;
    assert_eq!(
        error_code(status, &body, 404),
        "order_not_found",
        "another's order is absent, not forbidden"
    );
    assert_eq!(alice.get(&format!("/orders/{alices}")).await.0, 200);

    // Bob's same key and body make Bob's own order, not Alice's back.
    let (status, bobs) = bob.place(order.clone(), Some("shared-key")).await;
    assert_eq!(status, 201, "{bobs}");
    let bobs = bobs["id"].as_str().unwrap().to_owned();
    assert_ne!(bobs, alices);
    let (status, again) = alice.place(order.clone(), Some("shared-key")).await;
    assert_eq!(
        (status, again["id"].as_str()),
        (200, Some(alices.as_str())),
        "Alice's retry"
    );
    let (status, body) = bob
        .place(
            json!({"product_id": product, "quantity": 2}),
            Some("shared-key"),
        )
        .await;
    assert_eq!(
        error_code(status, &body, 422),
        "idempotency_key_reused",
        "Bob's key, another body"
    );

    assert_eq!(alice.listed("").await, std::slice::from_ref(&alices));
    assert_eq!(bob.listed("?limit=10").await, std::slice::from_ref(&bobs));
    let all = support.listed("?limit=100").await;
    assert!(all.contains(&alices) && all.contains(&bobs), "{all:?}");

    // An order placed before orders had owners: only support sees it.
    pipeline
        .stores
        .orders
        .execute(
            "UPDATE orders SET owner_issuer = NULL, owner_subject = NULL WHERE id = $1",
            &[&uuid::Uuid::parse_str(&alices).unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(alice.get(&format!("/orders/{alices}")).await.0, 404);
    assert!(alice.listed("").await.is_empty());
    assert_eq!(support.get(&format!("/orders/{alices}")).await.0, 200);
    pipeline.stop().await;
}
