//! The Redis cache: filled on GET, invalidated by every write (read from
//! Redis itself), never serving an old value after a write.

use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::helpers::{error_code, spawn_app, spawn_app_with};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_fills_the_cache_with_a_ttl() {
    let app = spawn_app().await;
    let id = app.create_product("Cached", 100, 5).await["id"]
        .as_i64()
        .unwrap();
    assert_eq!(
        app.cached(id).await,
        None,
        "a create must not leave an entry"
    );
    app.get_product(id).await;
    let cached = app.cached(id).await.expect("the GET filled the cache");
    assert_eq!(cached["name"], "Cached");
    let ttl = app.cache_ttl(id).await;
    assert!(ttl > 0 && ttl <= 300, "ttl {ttl}");
    assert_eq!(app.counter(id).await, Some(5));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_patch_and_delete_each_invalidate_the_entry() {
    let app = spawn_app().await;
    let id = app.create_product("Before", 100, 5).await["id"]
        .as_i64()
        .unwrap();
    let path = format!("/products/{id}");

    app.get_product(id).await;
    assert!(app.cached(id).await.is_some());
    let put = app
        .client
        .put(app.url(&path))
        .json(&json!({"name": "Put", "price": 1, "stock": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(app.cached(id).await, None, "PUT left the old entry");
    let after_put: Value = app.get_product(id).await.json().await.unwrap();
    assert_eq!(
        (after_put["name"].as_str(), after_put["stock"].as_i64()),
        (Some("Put"), Some(2))
    );

    assert!(app.cached(id).await.is_some());
    app.client
        .patch(app.url(&path))
        .json(&json!({"name": "Patched"}))
        .send()
        .await
        .unwrap();
    assert_eq!(app.cached(id).await, None, "PATCH left the old entry");
    let after_patch: Value = app.get_product(id).await.json().await.unwrap();
    assert_eq!(after_patch["name"], "Patched");

    assert!(app.cached(id).await.is_some());
    app.client.delete(app.url(&path)).send().await.unwrap();
    assert_eq!(app.cached(id).await, None, "DELETE left the old entry");
    assert_eq!(app.get_product(id).await.status(), 404);
    assert_eq!(app.cached(id).await, None, "a 404 must not be cached");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_leave_cache_and_table_agreeing() {
    let app = spawn_app().await;
    let id = app.create_product("Contended", 1, 1).await["id"]
        .as_i64()
        .unwrap();
    let path = format!("/products/{id}");
    let mut writers = Vec::new();
    for writer in 0..8 {
        let client = app.client.clone();
        let url = app.url(&path);
        writers.push(tokio::spawn(async move {
            for round in 0..10 {
                let body = json!({"name": format!("w{writer}-r{round}"), "price": writer * 100 + round, "stock": round});
                assert_eq!(client.put(&url).json(&body).send().await.unwrap().status(), 200);
                // Readers race the writers, trying to put stale values back.
                client.get(&url).send().await.unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let (name, price, stock) = app.row(id).await.unwrap();
    if let Some(cached) = app.cached(id).await {
        assert_eq!(
            (cached["name"].as_str(), cached["price"].as_i64()),
            (Some(name.as_str()), Some(price))
        );
    }
    let served: Value = app.get_product(id).await.json().await.unwrap();
    assert_eq!(
        (
            served["name"].as_str(),
            served["price"].as_i64(),
            served["stock"].as_i64()
        ),
        (Some(name.as_str()), Some(price), Some(stock))
    );
    assert_eq!(app.counter(id).await, Some(stock));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_from_a_read_older_than_a_write_cannot_put_the_old_value_back() {
    // A reader that read the row before a write and fills after it: the
    // write's fence must refuse its fill.
    let app = spawn_app().await;
    let id = app.create_product("Old", 100, 5).await["id"]
        .as_i64()
        .unwrap();
    let read_before: product::domain::Product = app.get_product(id).await.json().await.unwrap();
    let put = app
        .client
        .put(app.url(&format!("/products/{id}")))
        .json(&json!({"name": "New", "price": 200, "stock": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    app.cache().fill(&read_before).await.unwrap();
    assert_eq!(app.cached(id).await, None, "the stale fill landed");
    let served: Value = app.get_product(id).await.json().await.unwrap();
    assert_eq!(
        (served["name"].as_str(), served["price"].as_i64()),
        (Some("New"), Some(200))
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_invalidation_redis_cannot_take_is_refused_and_changes_nothing() {
    // Nothing listens on port 9: every Redis call of the service fails.
    let app = spawn_app_with(&[("REDIS_URL", "redis://127.0.0.1:9")]).await;
    let created = app.create_product("Kept", 100, 5).await;
    let id = created["id"].as_i64().unwrap();
    let path = format!("/products/{id}");
    let put = app
        .client
        .put(app.url(&path))
        .json(&json!({"name": "Lost", "price": 1, "stock": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(put, 503).await, "dependency_unavailable");
    let patch = app
        .client
        .patch(app.url(&path))
        .json(&json!({"name": "Lost"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(patch, 503).await, "dependency_unavailable");
    let delete = app.client.delete(app.url(&path)).send().await.unwrap();
    assert_eq!(error_code(delete, 503).await, "dependency_unavailable");
    assert_eq!(app.row(id).await, Some(("Kept".to_owned(), 100, 5)));
    // Reads still work, from PostgreSQL.
    let served: Value = app.get_product(id).await.json().await.unwrap();
    assert_eq!(served["version"], created["version"]);
    // What an alert reads: not ready, and which dependency is down.
    let metrics = app.metrics().await;
    for line in [
        "service_ready 0",
        r#"dependency_up{dependency="redis"} 0"#,
        r#"dependency_up{dependency="postgres"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} missing from {metrics}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fence_restarts_the_fence_ttl() {
    let app = spawn_app().await;
    let cache = app.cache();
    let fence = cache.fence_key(7);
    let mut redis = app.redis.clone();
    cache.invalidate(7, 3).await.unwrap();
    // Nearly expired, then fenced again at the same version and at an
    // older one: each fence is as recent as the write it protects.
    for version in [3, 2] {
        let _: () = redis.expire(&fence, 2).await.unwrap();
        cache.invalidate(7, version).await.unwrap();
        let ttl: i64 = redis.ttl(&fence).await.unwrap();
        assert!(
            ttl > 2,
            "fencing version {version} kept the old TTL ({ttl} s)"
        );
        let kept: i64 = redis.get(&fence).await.unwrap();
        assert_eq!(kept, 3, "a fence went backwards");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_services_redis_user_reaches_its_own_keys_and_commands_only() {
    let app = spawn_app().await;
    // The service works as its user: a product read fills the cache.
    let id = app.create_product("Limited", 100, 5).await["id"]
        .as_i64()
        .unwrap();
    app.get_product(id).await;

    let mut limited = redis::Client::open(app.service_redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let own: Option<String> = redis::cmd("GET")
        .arg(format!("{}product:{{{id}}}", app.prefix))
        .query_async(&mut limited)
        .await
        .unwrap();
    assert!(own.is_some(), "its own cache entry");
    let refused = [
        redis::cmd("GET").arg("another-service:secret").clone(),
        redis::cmd("SET")
            .arg(format!("not-{}stock:{{1}}", app.prefix))
            .arg("0")
            .clone(),
        redis::cmd("FLUSHALL").clone(),
        redis::cmd("KEYS").arg("*").clone(),
        redis::cmd("EVAL").arg("return 1").arg(0).clone(),
        redis::cmd("CONFIG").arg("GET").arg("*").clone(),
        redis::cmd("ACL").arg("LIST").clone(),
    ];
    for command in refused {
        let error = command
            .query_async::<redis::Value>(&mut limited)
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some("NOPERM"), "{command:?}: {error}");
    }
    app.stop().await;
}
