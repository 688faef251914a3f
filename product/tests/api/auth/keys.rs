//! The issuer's keys: rotated without a restart, kept while the issuer is
//! away.

use http_api::auth::local_issuer::LocalIssuer;
use serde_json::json;
use testkit::issuer::{AUDIENCE, ISSUER};
use testkit::jwks::JwksServer;

use super::{WRITE, app_trusting, claims, eventually, send};

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
    let ready = app.readiness().await;
    assert_eq!(
        (ready["issuer_keys"].as_str(), ready["auth"].as_str()),
        (Some("up"), Some("on"))
    );
}
