//! Who may call the product API, tried from outside as an attacker
//! would. Here: every catalog write without a token and with a token
//! lacking its scope (reading stays public), and checks turned off;
//! [`hostile`]: hostile tokens of every kind; [`keys`]: key rotation at
//! the issuer and the issuer going away; [`limits`]: the limits per
//! subject and per failing address.

mod hostile;
mod keys;
mod limits;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use testkit::issuer::{AUDIENCE, ISSUER};
use testkit::jwks::JwksServer;

use crate::helpers::{TestApp, spawn_app_with};

const WRITE: &str = "catalog.write";

/// The catalog writes, each with a body it would accept.
fn writes() -> Vec<(reqwest::Method, &'static str, Value)> {
    use reqwest::Method;
    vec![
        (
            Method::POST,
            "/products",
            json!({"name": "n", "price": 1, "stock": 1}),
        ),
        (
            Method::PUT,
            "/products/1",
            json!({"name": "n", "price": 1, "stock": 1}),
        ),
        (Method::PATCH, "/products/1", json!({"price": 2})),
        (Method::DELETE, "/products/1", json!({})),
        (Method::POST, "/products/1/stock", json!({"delta": 1})),
    ]
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(scope: &str) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "mallory", "scope": scope,
           "iat": now(), "exp": now() + 600})
}

/// A product service trusting the keys `jwks` serves (and nothing else),
/// with `extra` settings.
async fn app_trusting(jwks: &JwksServer, extra: &[(&str, &str)]) -> TestApp {
    let mut settings = extra.to_vec();
    settings.extend([
        ("AUTH_JWKS_URL", jwks.url.as_str()),
        ("AUTH_JWKS_FILE", ""),
        ("AUTH_JWKS_REFRESH_SECS", "1"),
        ("AUTH_JWKS_MIN_REFRESH_SECS", "1"),
    ]);
    spawn_app_with(&settings).await
}

async fn send(app: &TestApp, token: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(app.url("/products"))
        .json(&json!({"name": "forged", "price": 0, "stock": 1}));
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    request.send().await.unwrap()
}

/// The error code of a refusal, and its challenge.
async fn refusal(response: reqwest::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get(WWW_AUTHENTICATE)
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body: Value = response.json().await.unwrap();
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, code, challenge)
}

async fn product_count(app: &TestApp) -> i64 {
    let client = app.pool.get().await.unwrap();
    client
        .query_one("SELECT count(*) FROM products", &[])
        .await
        .unwrap()
        .get(0)
}

/// Polls `check` every 50 ms until it holds, for 15 s at most.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn every_catalog_write_needs_a_token_with_catalog_write() {
    let app = crate::helpers::spawn_app().await;
    let issuer = testkit::issuer::issuer();
    let orders_only = issuer.token("shopper", "orders.place orders.read orders.read_all");
    let anonymous = reqwest::Client::new();
    for (method, path, body) in writes() {
        let response = anonymous
            .request(method.clone(), app.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, code, challenge) = refusal(response).await;
        assert_eq!(
            (status, code.as_str()),
            (401, "unauthenticated"),
            "{method} {path}"
        );
        assert_eq!(
            challenge, r#"Bearer realm="order-pipeline""#,
            "no error code without a token"
        );

        let response = anonymous
            .request(method.clone(), app.url(path))
            .bearer_auth(&orders_only)
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, code, challenge) = refusal(response).await;
        assert_eq!(
            (status, code.as_str()),
            (403, "insufficient_scope"),
            "{method} {path}"
        );
        assert!(
            challenge.contains(r#"scope="catalog.write""#),
            "{challenge}"
        );
    }
    assert_eq!(product_count(&app).await, 0, "nothing was written");
    // Reading stays public.
    let created = app.create_product("readable", 100, 1).await;
    let id = created["id"].as_i64().unwrap();
    for path in [format!("/products/{id}"), "/products".to_owned()] {
        let response = anonymous.get(app.url(&path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn checks_turned_off_say_so_in_readiness_and_let_anyone_in() {
    let app = spawn_app_with(&[("AUTH_DISABLED", "true")]).await;
    let ready = app.readiness().await;
    assert_eq!(ready["auth"], "off", "{ready}");
    assert!(ready.get("issuer_keys").is_none(), "{ready}");
    assert_eq!(send(&app, None).await.status(), 201, "no token needed");
    assert!(app.metrics().await.contains("auth_checks_enabled 0"));
}
