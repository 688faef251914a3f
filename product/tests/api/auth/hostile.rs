//! Hostile tokens, each refused with `invalid_token` (or the request
//! with `invalid_request`), and nothing written.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_api::auth::local_issuer::LocalIssuer;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::AUTHORIZATION;
use serde_json::{Value, json};
use testkit::issuer::{AUDIENCE, ISSUER, RsaKey};
use testkit::jwks::JwksServer;

use super::{WRITE, app_trusting, claims, now, product_count, refusal, send};

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
