//! `spawn_app`: a product service on a free port, with its own database,
//! key prefix and broker namespace; and readers of the stores themselves.

use std::time::Duration;

use deadpool_postgres::Pool;
use platform::settings::Settings;
use platform::shutdown::Signal;
use product::config::Config;
use redis::AsyncCommands;
use serde_json::Value;
use uuid::Uuid;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

pub(crate) struct TestApp {
    pub(crate) address: String,
    /// The admin listener (`/metrics`, `/readyz`).
    pub(crate) admin: String,
    pub(crate) client: reqwest::Client,
    pub(crate) pool: Pool,
    /// Redis as its administrator (the service has a user of its own).
    pub(crate) redis: redis::aio::MultiplexedConnection,
    pub(crate) prefix: String,
    /// The service's Redis user, its URL: limited to `prefix`'s keys.
    pub(crate) redis_user: String,
    pub(crate) service_redis_url: String,
    /// Prefix of this app's exchanges and queues.
    pub(crate) namespace: String,
    database: tokio_postgres::Config,
    stop: Signal,
    stopped: tokio::task::JoinHandle<()>,
}

pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// A product service whose settings `overrides` replace (the test itself
/// still reaches the real servers).
pub(crate) async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    platform::telemetry::init_for_tests();
    let id = Uuid::new_v4().simple().to_string();
    let database =
        testkit::ServiceDatabase::provision(None, "product", &format!("product_test_{id}")).await;
    let redis_url = env_or("REDIS_URL", "redis://127.0.0.1:6379");
    let prefix = format!("test:{id}:");
    let namespace = format!("test.{}.", &id[..12]);
    let amqp_url = env_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
    let mut redis = redis::Client::open(redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // The service reaches Redis as a user of its own, as in production.
    let redis_user = format!("test-{id}");
    let redis_password = Uuid::new_v4().simple().to_string();
    product::cache::acl::provision(&mut redis, &redis_user, Some(&redis_password), &prefix)
        .await
        .unwrap();
    let service_redis_url = testkit::redis_url_as(&redis_url, &redis_user, &redis_password);
    // The first setting of a name wins: overrides come first.
    let mut source: Vec<(&str, &str)> = overrides.to_vec();
    source.extend([
        ("PRODUCT_DATABASE_URL", database.runtime.as_str()),
        ("PRODUCT_DATABASE_OWNER_URL", database.owner.as_str()),
        ("PRODUCT_DATABASE_POOL_SIZE", "6"),
        ("REDIS_URL", service_redis_url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("AMQP_URL", amqp_url.as_str()),
        ("AMQP_NAMESPACE", namespace.as_str()),
        ("AMQP_QUEUE_EXPIRES_MS", "60000"),
        ("PRODUCT_HOST", "127.0.0.1"),
        ("PRODUCT_PORT", "0"),
        ("PRODUCT_ADMIN_PORT", "0"),
        ("RELAY_POLL_INTERVAL_MS", "100"),
    ]);
    source.extend(testkit::issuer::issuer().settings());
    let config = Config::read(&Settings::new(&source)).expect("test settings are valid");
    // The test's own connections: the administrator's, as an operator's.
    let database = database.admin_config();
    let application = product::startup::build(config)
        .await
        .expect("the application starts");
    let address = format!("http://127.0.0.1:{}", application.port());
    let admin = format!("http://{}", application.admin_addr());
    let stop = Signal::new();
    let stopped = tokio::spawn(application.run_until_stopped(stop.clone().cancelled_owned()));
    let pool = platform::db::pool(&database, 2).unwrap();
    wait_until_subscribed(&admin).await;
    TestApp {
        address,
        admin,
        client: testkit::issuer::issuer().client("catalog-admin"),
        pool,
        redis,
        prefix,
        redis_user,
        service_redis_url,
        namespace,
        database,
        stop,
        stopped,
    }
}

/// Deletes a test's queues and exchanges at once: each quorum queue holds
/// file descriptors of the broker (1,024 by default here), and waiting for
/// their expiry let a few test runs exhaust them.
pub(crate) async fn delete_topology(namespace: &str) {
    let url = env_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
    let Ok(connection) = outbox::broker::connect(&url, "test cleanup").await else {
        return;
    };
    if let Ok(channel) = connection.create_channel().await {
        let topology =
            outbox::topology::Topology::new(namespace, outbox::topology::QueueType::Quorum);
        let _ = topology.delete(&channel).await;
    }
    let _ = connection.close(200, "done".into()).await;
}

/// Waits until the service's consumer is subscribed, so the topology is
/// declared: a test that publishes before that would see its message
/// dropped as unroutable.
pub(crate) async fn wait_until_subscribed(address: &str) {
    for _ in 0..300 {
        let ready = reqwest::get(format!("{address}/readyz")).await;
        if let Ok(response) = ready {
            if response
                .text()
                .await
                .unwrap_or_default()
                .contains(r#""rabbitmq":"up""#)
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the service never subscribed to its queue");
}

impl TestApp {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub(crate) async fn post_json(&self, path: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Creates a product and returns its JSON.
    pub(crate) async fn create_product(&self, name: &str, price: i64, stock: i64) -> Value {
        let response = self
            .post_json(
                "/products",
                serde_json::json!({"name": name, "price": price, "stock": stock}),
            )
            .await;
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    pub(crate) async fn get_product(&self, id: i64) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/products/{id}")))
            .send()
            .await
            .unwrap()
    }

    /// The product row as PostgreSQL has it.
    pub(crate) async fn row(&self, id: i64) -> Option<(String, i64, i64)> {
        let client = self.pool.get().await.unwrap();
        client
            .query_opt(
                "SELECT name, price, stock FROM products WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
    }

    /// Every product row, as text, to compare before and after a request.
    pub(crate) async fn table_snapshot(&self) -> String {
        let client = self.pool.get().await.unwrap();
        let row = client
            .query_one(
                "SELECT coalesce(string_agg(p::text, '|' ORDER BY id), '') FROM products p",
                &[],
            )
            .await
            .unwrap();
        row.get(0)
    }

    /// `GET path` on the admin listener, without a token.
    pub(crate) async fn admin_get(&self, path: &str) -> reqwest::Response {
        reqwest::get(format!("{}{path}", self.admin)).await.unwrap()
    }

    /// The admin listener's `/readyz` body.
    pub(crate) async fn readiness(&self) -> Value {
        self.admin_get("/readyz").await.json().await.unwrap()
    }

    /// The service's `/metrics` text.
    pub(crate) async fn metrics(&self) -> String {
        self.admin_get("/metrics").await.text().await.unwrap()
    }

    /// A cache client of this app's keys, as the service has one.
    pub(crate) fn cache(&self) -> product::cache::ProductCache {
        let metrics = product::cache::CacheMetrics::register(&prometheus::Registry::new()).unwrap();
        product::cache::ProductCache::new(
            &env_or("REDIS_URL", "redis://127.0.0.1:6379"),
            &self.prefix,
            Duration::from_secs(300),
            metrics,
        )
        .unwrap()
    }

    /// The cached JSON in Redis, if any.
    pub(crate) async fn cached(&self, id: i64) -> Option<Value> {
        let mut redis = self.redis.clone();
        let json: Option<String> = redis
            .get(format!("{}product:{{{id}}}", self.prefix))
            .await
            .unwrap();
        json.map(|json| serde_json::from_str(&json).unwrap())
    }

    /// The live stock counter in Redis, if any.
    pub(crate) async fn counter(&self, id: i64) -> Option<i64> {
        let mut redis = self.redis.clone();
        redis
            .hget(format!("{}stock:{{{id}}}", self.prefix), "stock")
            .await
            .unwrap()
    }

    pub(crate) async fn cache_ttl(&self, id: i64) -> i64 {
        let mut redis = self.redis.clone();
        redis
            .ttl(format!("{}product:{{{id}}}", self.prefix))
            .await
            .unwrap()
    }

    /// Waits (up to 30 s) until `check` holds, polling the stores.
    pub(crate) async fn eventually<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..600 {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting until {what}");
    }

    pub(crate) async fn stop(self) {
        self.stop.cancel();
        self.stopped.await.unwrap();
        delete_topology(&self.namespace).await;
        self.pool.close();
        let mut redis = self.redis.clone();
        let keys: Vec<String> = redis
            .keys(format!("{}*", self.prefix))
            .await
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: () = redis.del(keys).await.unwrap();
        }
        let _: () = redis::cmd("ACL")
            .arg("DELUSER")
            .arg(&self.redis_user)
            .query_async(&mut redis)
            .await
            .unwrap();
        platform::db::drop_database(&self.database).await.unwrap();
    }
}

/// Asserts the design's error body and returns its code.
pub(crate) async fn error_code(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status().as_u16(), status, "wrong status");
    let body: Value = response.json().await.expect("error bodies are JSON");
    let code = body["error"]["code"]
        .as_str()
        .expect("error.code is a string")
        .to_owned();
    assert!(
        body["error"]["message"].is_string(),
        "error.message is a string: {body}"
    );
    code
}

impl TestApp {
    /// Publishes an `order.created` envelope to this app's orders exchange,
    /// as the order service's relay would.
    pub(crate) async fn publish_order_created(&self, envelope: &outbox::envelope::Envelope) {
        let message = outbox::envelope::encode(std::slice::from_ref(envelope)).unwrap();
        self.publish_raw(&message.body).await;
    }

    /// Publishes any body to this app's orders exchange as `order.created`.
    pub(crate) async fn publish_raw(&self, body: &[u8]) {
        let url = env_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
        let connection = outbox::broker::connect(&url, "test publisher")
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        channel.confirm_select(Default::default()).await.unwrap();
        let confirmation = channel
            .basic_publish(
                format!("{}orders", self.namespace).as_str().into(),
                "order.created".into(),
                lapin::options::BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                lapin::BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert_eq!(
            confirmation,
            lapin::Confirmation::Ack(None),
            "the test message was not routed"
        );
        connection.close(200, "done".into()).await.unwrap();
    }

    /// Dead letters the service recorded, waiting for an operator.
    pub(crate) async fn dead_letters(&self) -> i64 {
        self.count("SELECT count(*) FROM dead_letters WHERE requeued_at IS NULL")
            .await
    }

    pub(crate) async fn count(&self, sql: &str) -> i64 {
        let client = self.pool.get().await.unwrap();
        client.query_one(sql, &[]).await.unwrap().get(0)
    }
}
