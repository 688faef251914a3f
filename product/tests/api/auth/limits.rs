//! The limits on callers: a subject's rate, and failed authentications
//! per client address (behind a trusted proxy).

use http_api::auth::local_issuer::LocalIssuer;
use serde_json::json;
use testkit::issuer::{AUDIENCE, ISSUER};

use super::{WRITE, claims, refusal};
use crate::helpers::spawn_app_with;

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
