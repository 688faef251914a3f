//! Who may call the product API, tried from outside as an attacker
//! would: every catalog write without a token and with a token lacking its
//! scope; hostile tokens of every kind; key rotation at the issuer and the
//! issuer going away; the limits per subject and per failing address.
//! Reading the catalog stays public.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_api::auth::local_issuer::LocalIssuer;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use testkit::issuer::{AUDIENCE, ISSUER, RsaKey};
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
async fn hostile_tokens_are_refused_and_change_nothing() {
    let trusted = LocalIssuer::generate(ISSUER, AUDIENCE).unwrap();
    let rsa = RsaKey::generate();
    let jwks = JwksServer::start(&json!({"keys": [trusted.jwk(), rsa.jwk("rsa-1")]})).await;
    let app = app_trusting(&jwks, &[]).await;

    // The trusted keys work, ES256 and RS256 alike.
    assert_eq!(
        send(&app, Some(&trusted.sign(&claims(WRITE)).unwrap()))
            .await
            .status(),
        201
    );
    let mut rs256 = Header::new(Algorithm::RS256);
    rs256.kid = Some("rsa-1".into());
    let rsa_signing = EncodingKey::from_rsa_pem(&rsa.private_pem).unwrap();
    let good_rsa = jsonwebtoken::encode(&rs256, &claims(WRITE), &rsa_signing).unwrap();
    assert_eq!(send(&app, Some(&good_rsa)).await.status(), 201);
    let before = product_count(&app).await;

    let b64 = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
    let with = |changes: Value| {
        let mut claims = claims(WRITE);
        for (name, value) in changes.as_object().unwrap() {
            claims[name] = value.clone();
        }
        trusted.sign(&claims).unwrap()
    };
    let mut hs256 = Header::new(Algorithm::HS256);
    hs256.kid = Some("rsa-1".into());
    let confused = jsonwebtoken::encode(
        &hs256,
        &claims(WRITE),
        &EncodingKey::from_secret(&rsa.public_pem),
    )
    .unwrap();
    let stranger = LocalIssuer::generate(ISSUER, AUDIENCE).unwrap();
    let good = trusted.sign(&claims(WRITE)).unwrap();
    let (signed_part, _) = good.rsplit_once('.').unwrap();
    let long = with(json!({"padding": "x".repeat(8 * 1024)}));
    let (long_part, _) = long.rsplit_once('.').unwrap();
    let hostile = [
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&claims(WRITE))
            ),
        ),
        ("HS256 keyed with the RSA public key", confused),
        ("expired", with(json!({"exp": now() - 3600}))),
        ("not yet valid", with(json!({"nbf": now() + 3600}))),
        (
            "another issuer",
            with(json!({"iss": "https://evil.example/"})),
        ),
        ("another audience", with(json!({"aud": "another-api"}))),
        ("an ID token", with(json!({"nonce": "n-0S6_WzA2Mj"}))),
        ("an unknown key id", stranger.sign(&claims(WRITE)).unwrap()),
        (
            "another key posing as the trusted one",
            stranger.sign_as(trusted.kid(), &claims(WRITE)).unwrap(),
        ),
        ("bad base64", "a.b.c".to_owned()),
        (
            "a signature of another token",
            format!("{signed_part}.{}", URL_SAFE_NO_PAD.encode([7u8; 64])),
        ),
        (
            "8 KiB with a bad signature",
            format!("{long_part}.{}", URL_SAFE_NO_PAD.encode([7u8; 64])),
        ),
        ("no subject", with(json!({"sub": ""}))),
    ];
    for (what, token) in hostile {
        let (status, code, challenge) = refusal(send(&app, Some(&token)).await).await;
        assert_eq!((status, code.as_str()), (401, "invalid_token"), "{what}");
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{what}: {challenge}"
        );
    }

    let twice = reqwest::Client::new()
        .post(app.url("/products"))
        .header(AUTHORIZATION, format!("Bearer {good}"))
        .header(AUTHORIZATION, format!("Bearer {good}"))
        .json(&json!({"name": "twice", "price": 1, "stock": 1}))
        .send()
        .await
        .unwrap();
    let (status, code, _) = refusal(twice).await;
    assert_eq!(
        (status, code.as_str()),
        (400, "invalid_request"),
        "two Authorization headers"
    );

    let in_query = reqwest::Client::new()
        .post(app.url(&format!("/products?access_token={good}")))
        .json(&json!({"name": "query", "price": 1, "stock": 1}))
        .send()
        .await
        .unwrap();
    let (status, code, _) = refusal(in_query).await;
    assert_eq!(
        (status, code.as_str()),
        (401, "unauthenticated"),
        "a token in the query is not read"
    );

    assert_eq!(
        product_count(&app).await,
        before,
        "no hostile request wrote anything"
    );
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
async fn keys_rotate_at_the_issuer_without_a_restart_and_survive_its_absence() {
    let old = LocalIssuer::generate(ISSUER, AUDIENCE).unwrap();
    let new = LocalIssuer::generate(ISSUER, AUDIENCE).unwrap();
    let jwks = JwksServer::start(&json!({"keys": [old.jwk()]})).await;
    let app = app_trusting(&jwks, &[("AUTH_JWKS_REFRESH_SECS", "3600")]).await;
    let old_token = old.sign(&claims(WRITE)).unwrap();
    assert_eq!(
        send(&app, Some(&old_token)).await.status(),
        201,
        "verified, and cached"
    );

    // The issuer adds a key and signs with it: the unknown key id fetches
    // the keys again (at most once a second here), long before the
    // hourly refresh.
    jwks.set(&json!({"keys": [old.jwk(), new.jwk()]}));
    let new_token = new.sign(&claims(WRITE)).unwrap();
    eventually("the new key is accepted", || async {
        send(&app, Some(&new_token)).await.status() == 201
    })
    .await;

    // It removes the old key: the old token, though verified and cached,
    // is refused once the keys are fetched again (here by another unknown
    // key id, at most once a second).
    jwks.set(&json!({"keys": [new.jwk()]}));
    let stranger = LocalIssuer::generate(ISSUER, AUDIENCE).unwrap();
    let strange = stranger.sign(&claims(WRITE)).unwrap();
    eventually("the removed key's cached token is refused", || async {
        let _ = send(&app, Some(&strange)).await;
        send(&app, Some(&old_token)).await.status() == 401
    })
    .await;
    assert_eq!(send(&app, Some(&new_token)).await.status(), 201);
    drop(app);
}

#[tokio::test]
async fn the_keys_held_keep_working_while_the_issuer_is_down() {
    let key = LocalIssuer::generate(ISSUER, AUDIENCE).unwrap();
    let jwks = JwksServer::start(&json!({"keys": [key.jwk()]})).await;
    let app = app_trusting(&jwks, &[]).await;
    let fresh = || key.sign(&claims(WRITE)).unwrap();
    assert_eq!(send(&app, Some(&fresh())).await.status(), 201);
    jwks.stop();
    eventually("a refresh of the keys fails", || async {
        app.metrics()
            .await
            .contains(r#"auth_jwks_refreshes_total{result="failed"}"#)
    })
    .await;
    // A token never seen before is verified with the keys held.
    assert_eq!(send(&app, Some(&fresh())).await.status(), 201);
    let ready: Value = reqwest::get(format!("{}/readyz", app.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (ready["issuer_keys"].as_str(), ready["auth"].as_str()),
        (Some("up"), Some("on"))
    );
}

#[tokio::test]
async fn a_subject_over_its_rate_gets_429_with_retry_after_and_others_go_on() {
    let app = spawn_app_with(&[("AUTH_SUBJECT_RATE", "0.1"), ("AUTH_SUBJECT_BURST", "3")]).await;
    let issuer = testkit::issuer::issuer();
    let (busy, other) = (issuer.token("busy", WRITE), issuer.token("other", WRITE));
    let patch = |token: &str| {
        reqwest::Client::new()
            .patch(app.url("/products/999999"))
            .bearer_auth(token)
            .json(&json!({"price": 5}))
            .send()
    };
    for _ in 0..3 {
        assert_eq!(
            patch(&busy).await.unwrap().status(),
            404,
            "within the burst"
        );
    }
    let limited = patch(&busy).await.unwrap();
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry), "Retry-After {retry}");
    assert_eq!(refusal(limited).await.1, "rate_limited");
    assert_eq!(
        patch(&other).await.unwrap().status(),
        404,
        "another subject's own bucket"
    );
}

#[tokio::test]
async fn an_address_that_fails_too_often_is_refused_before_any_signature_check() {
    let app = spawn_app_with(&[
        ("AUTH_PEER_FAILURES_PER_MINUTE", "3"),
        ("AUTH_TRUSTED_PROXIES", "127.0.0.1"),
    ])
    .await;
    let good = testkit::issuer::issuer().token("honest", WRITE);
    let stranger = LocalIssuer::generate(ISSUER, AUDIENCE).unwrap();
    let bad = stranger.sign(&claims(WRITE)).unwrap();
    let from = |forwarded: &'static str, token: &str| {
        reqwest::Client::new()
            .patch(app.url("/products/999999"))
            .header("X-Forwarded-For", forwarded)
            .bearer_auth(token)
            .json(&json!({"price": 5}))
            .send()
    };
    for _ in 0..3 {
        assert_eq!(from("10.0.0.1", &bad).await.unwrap().status(), 401);
    }
    let limited = from("10.0.0.1", &good).await.unwrap();
    assert_eq!(
        limited.status(),
        429,
        "even a good token waits: nothing is checked"
    );
    assert!(limited.headers().contains_key("retry-after"));
    assert_eq!(refusal(limited).await.1, "too_many_failed_authentications");
    // What a client writes before the proxy's own entry is not believed.
    let forged = from("10.9.9.9, 10.0.0.1", &good).await.unwrap();
    assert_eq!(
        forged.status(),
        429,
        "the address the proxy saw is the one counted"
    );
    assert_eq!(
        from("10.0.0.2", &good).await.unwrap().status(),
        404,
        "another client"
    );
}

#[tokio::test]
async fn checks_turned_off_say_so_in_readiness_and_let_anyone_in() {
    let app = spawn_app_with(&[("AUTH_DISABLED", "true")]).await;
    let ready: Value = reqwest::get(format!("{}/readyz", app.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["auth"], "off", "{ready}");
    assert!(ready.get("issuer_keys").is_none(), "{ready}");
    assert_eq!(send(&app, None).await.status(), 201, "no token needed");
    assert!(app.metrics().await.contains("auth_checks_enabled 0"));
}
