//! `spawn_pipeline`: a product service and an order service wired
//! together, and the invariant check every end-to-end test ends with.

use std::collections::BTreeMap;
use std::time::Duration;

use perf::invariants::{self, Stores};
use platform::settings::Settings;
use platform::shutdown::Signal;
use serde_json::{Value, json};

/// Runs a started service until its signal is cancelled.
fn serve(app: http_api::lifecycle::Running) -> (Signal, tokio::task::JoinHandle<()>) {
    let stop = Signal::new();
    let running = tokio::spawn(app.run_until_stopped(stop.clone().cancelled_owned()));
    (stop, running)
}
use uuid::Uuid;

pub(crate) struct TestPipeline {
    pub(crate) client: reqwest::Client,
    pub(crate) product_address: String,
    pub(crate) order_address: String,
    /// The order service's admin listener (`/metrics`, `/readyz`).
    pub(crate) order_admin: String,
    pub(crate) stores: Stores,
    /// Stock of each product when the test created it.
    pub(crate) initial: BTreeMap<i64, i64>,
    /// Prefix of this pipeline's exchanges and queues.
    namespace: String,
    pub(crate) product_database: tokio_postgres::Config,
    pub(crate) order_database: tokio_postgres::Config,
    /// The product service's settings, to restart it on the same port.
    product_config: product::config::Config,
    /// The product service's Redis user, deleted at the end.
    redis_user: String,
    /// Stops of the order service (first) and the product service (second).
    stops: Vec<(Signal, tokio::task::JoinHandle<()>)>,
}

/// How a test wants its pipeline: settings that replace the defaults of
/// either service, and a proxy the order service reaches its database
/// through (to cut its connections mid-statement).
#[derive(Default)]
pub(crate) struct Options<'a> {
    pub(crate) order: &'a [(&'a str, &'a str)],
    pub(crate) product: &'a [(&'a str, &'a str)],
    pub(crate) order_database_proxy: Option<&'a testkit::Proxy>,
    /// A URL of the PostgreSQL server (or cluster) both databases are made
    /// on, its database part replaced: `TEST_DATABASE_URL`'s by default.
    pub(crate) database_server: Option<&'a str>,
}

/// Starts both services; `order_overrides` replace order service settings
/// (`PRODUCT_URL` pointing nowhere, to test the product service being down).
pub(crate) async fn spawn_pipeline_with(order_overrides: &[(&str, &str)]) -> TestPipeline {
    spawn_pipeline_with_options(Options {
        order: order_overrides,
        ..Options::default()
    })
    .await
}

pub(crate) async fn spawn_pipeline_with_options(options: Options<'_>) -> TestPipeline {
    platform::telemetry::init_for_tests();
    let id = Uuid::new_v4().simple().to_string();
    let namespace = format!("test.{}.", &id[..12]);
    let prefix = format!("test:{id}:");
    let redis_url = testkit::redis_url();
    // The product service reaches Redis as a user of its own.
    let redis_user = format!("test-{id}");
    let redis_password = Uuid::new_v4().simple().to_string();
    let mut redis_admin = redis::Client::open(redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    product::cache::acl::provision(
        &mut redis_admin,
        &redis_user,
        Some(&redis_password),
        &prefix,
    )
    .await
    .unwrap();
    let service_redis_url = testkit::redis_url_as(&redis_url, &redis_user, &redis_password);
    let amqp_url = testkit::amqp_url();
    let shared = [
        ("AMQP_URL", amqp_url.as_str()),
        ("AMQP_NAMESPACE", namespace.as_str()),
        ("AMQP_QUEUE_EXPIRES_MS", "60000"),
        ("RELAY_POLL_INTERVAL_MS", "100"),
    ];

    let server = options.database_server;
    let product_db =
        testkit::ServiceDatabase::provision(server, "product", &format!("product_test_{id}")).await;
    let mut product_settings: Vec<(&str, &str)> = options.product.to_vec();
    product_settings.extend([
        ("PRODUCT_DATABASE_URL", product_db.runtime.as_str()),
        ("PRODUCT_DATABASE_OWNER_URL", product_db.owner.as_str()),
        ("PRODUCT_DATABASE_POOL_SIZE", "6"),
        ("REDIS_URL", service_redis_url.as_str()),
        ("REDIS_KEY_PREFIX", prefix.as_str()),
        ("PRODUCT_HOST", "127.0.0.1"),
        ("PRODUCT_PORT", "0"),
        ("PRODUCT_ADMIN_PORT", "0"),
    ]);
    product_settings.extend(shared);
    product_settings.extend(testkit::issuer::issuer().settings());
    let mut product_config =
        product::config::Config::read(&Settings::new(&product_settings)).unwrap();
    let product_database = product_db.admin_config();
    let product_app = product::startup::build(product_config.clone())
        .await
        .unwrap();
    // A restart binds the same port, so the order service still finds it.
    product_config.http.port = product_app.port();
    product_config.http.admin_port = product_app.admin_addr().port();
    let product_address = format!("http://127.0.0.1:{}", product_app.port());
    let product_admin = format!("http://{}", product_app.admin_addr());

    let order_db =
        testkit::ServiceDatabase::provision(server, "order", &format!("order_test_{id}")).await;
    let (order_runtime, order_owner) = match options.order_database_proxy {
        Some(proxy) => (
            proxy.through(&order_db.runtime),
            proxy.through(&order_db.owner),
        ),
        None => (order_db.runtime.clone(), order_db.owner.clone()),
    };
    // The first setting of a name wins: overrides come first.
    let mut order_settings: Vec<(&str, &str)> = options.order.to_vec();
    order_settings.extend([
        ("ORDER_DATABASE_URL", order_runtime.as_str()),
        ("ORDER_DATABASE_OWNER_URL", order_owner.as_str()),
        ("ORDER_DATABASE_POOL_SIZE", "6"),
        ("ORDER_HOST", "127.0.0.1"),
        ("ORDER_PORT", "0"),
        ("ORDER_ADMIN_PORT", "0"),
        ("PRODUCT_URL", &product_address),
    ]);
    order_settings.extend(shared);
    order_settings.extend(testkit::issuer::issuer().settings());
    let order_config = order::config::Config::read(&Settings::new(&order_settings)).unwrap();
    // The test's own connections go straight to the server as its
    // administrator, never through the proxy it may cut.
    let order_database = order_db.admin_config();
    let order_app = order::startup::build(order_config).await.unwrap();
    let order_address = format!("http://127.0.0.1:{}", order_app.port());
    let order_admin = format!("http://{}", order_app.admin_addr());

    let stops = vec![serve(order_app), serve(product_app)];
    // Both services subscribed: their topology is declared before a test
    // publishes anything.
    for address in [&order_admin, &product_admin] {
        let mut subscribed = false;
        for _ in 0..300 {
            if let Ok(response) = reqwest::get(format!("{address}/readyz")).await {
                if response
                    .text()
                    .await
                    .unwrap_or_default()
                    .contains(r#""rabbitmq":"up""#)
                {
                    subscribed = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(subscribed, "{address} never subscribed to its queues");
    }
    let stores = Stores::connect(&order_database, &product_database, &redis_url, &prefix)
        .await
        .unwrap();
    TestPipeline {
        client: testkit::issuer::issuer().client("pipeline-tester"),
        product_address,
        order_address,
        order_admin,
        stores,
        initial: BTreeMap::new(),
        namespace,
        product_database,
        order_database,
        product_config,
        redis_user,
        stops,
    }
}

pub(crate) async fn spawn_pipeline() -> TestPipeline {
    spawn_pipeline_with(&[]).await
}

impl TestPipeline {
    pub(crate) async fn create_product(&mut self, name: &str, price: i64, stock: i64) -> i64 {
        let response = self
            .client
            .post(format!("{}/products", self.product_address))
            .json(&json!({"name": name, "price": price, "stock": stock}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        let id = response.json::<Value>().await.unwrap()["id"]
            .as_i64()
            .unwrap();
        self.initial.insert(id, stock);
        id
    }

    pub(crate) fn order_request(&self, body: &Value) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}/orders", self.order_address))
            .json(body)
    }

    /// Places an order and returns (status, body).
    pub(crate) async fn place(&self, body: Value) -> (u16, Value) {
        let response = self.order_request(&body).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// One sample of the order service's `/metrics`, by its full name
    /// with labels as Prometheus prints them; 0 when absent.
    pub(crate) async fn metric(&self, sample: &str) -> u64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.order_admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(sample)?.trim().parse::<f64>().ok())
            .map_or(0, |value| value as u64)
    }

    pub(crate) async fn order(&self, id: &str) -> Value {
        self.client
            .get(format!("{}/orders/{id}", self.order_address))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The full name of one of this pipeline's queues (`order-created`…).
    pub(crate) fn queue(&self, name: &str) -> String {
        format!("{}{name}", self.namespace)
    }

    /// Connects the test's own store clients again (after a failover: to
    /// the new primary).
    pub(crate) async fn reconnect_stores(&mut self) {
        let redis_url = testkit::redis_url();
        let prefix = self.stores.redis_prefix.clone();
        self.stores = Stores::connect(
            &self.order_database,
            &self.product_database,
            &redis_url,
            &prefix,
        )
        .await
        .unwrap();
    }

    /// Waits up to `limit` until no order is PENDING; false if some still are.
    pub(crate) async fn wait_until_decided(&self, limit: Duration) -> bool {
        let started = std::time::Instant::now();
        while started.elapsed() < limit {
            let pending: i64 = self
                .stores
                .orders
                .query_one("SELECT count(*) FROM orders WHERE status = 'PENDING'", &[])
                .await
                .unwrap()
                .get(0);
            if pending == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Waits for the loop to drain, then checks every invariant.
    pub(crate) async fn assert_invariants(&mut self) -> invariants::Report {
        let (drained, _) = invariants::wait_for_drain(&self.stores, Duration::from_secs(30))
            .await
            .unwrap();
        let report = invariants::check(&mut self.stores, &self.initial)
            .await
            .unwrap();
        assert!(drained, "the pipeline did not drain: {report:?}");
        assert!(
            report.holds(),
            "invariants broken: {:#?}",
            report.violations
        );
        report
    }

    /// Stops the product service (it drains) and starts it again on the
    /// same port and database, as a process manager would after a crash.
    pub(crate) async fn restart_product(&mut self) {
        self.stop_product().await;
        self.start_product().await;
    }

    /// Stops the product service; it drains first.
    pub(crate) async fn stop_product(&mut self) {
        let (stop, stopped) = self.stops.remove(1);
        stop.cancel();
        stopped.await.unwrap();
    }

    /// Starts the product service stopped by [`Self::stop_product`], on
    /// the same port and database.
    pub(crate) async fn start_product(&mut self) {
        self.start_product_with(|_| {}).await;
    }

    /// As [`Self::start_product`], with its settings changed by `adjust`
    /// for this run only.
    pub(crate) async fn start_product_with(
        &mut self,
        adjust: impl FnOnce(&mut product::config::Config),
    ) {
        let mut config = self.product_config.clone();
        adjust(&mut config);
        let app = product::startup::build(config).await.unwrap();
        self.stops.push(serve(app));
    }

    /// Terminates every server connection to both test databases, as a
    /// failover or an operator's `pg_terminate_backend` would.
    pub(crate) async fn terminate_database_connections(&self) -> i64 {
        let mut maintenance = self.order_database.clone();
        maintenance.dbname("postgres");
        let client = platform::db::connect(&maintenance).await.unwrap();
        let names = [
            self.order_database.get_dbname().unwrap(),
            self.product_database.get_dbname().unwrap(),
        ];
        let row = client
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = ANY($1) AND pid <> pg_backend_pid() AND application_name <> 'perf-invariants'",
                &[&names.as_slice()],
            )
            .await
            .unwrap();
        row.get(0)
    }

    pub(crate) async fn stop(self) {
        for (stop, stopped) in self.stops {
            stop.cancel();
            stopped.await.unwrap();
        }
        drop(self.stores);
        if let Ok(mut redis) = redis::Client::open(testkit::redis_url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
        {
            let _: Result<(), _> = redis::cmd("ACL")
                .arg("DELUSER")
                .arg(&self.redis_user)
                .query_async(&mut redis)
                .await;
        }
        // Each quorum queue holds broker file descriptors: delete them now
        // rather than at their expiry.
        if let Ok(connection) = outbox::broker::connect(&testkit::amqp_url(), "test cleanup").await
        {
            if let Ok(channel) = connection.create_channel().await {
                let topology = outbox::topology::Topology::new(
                    &self.namespace,
                    outbox::topology::QueueType::Quorum,
                );
                let _ = topology.delete(&channel).await;
            }
            let _ = connection.close(200, "done".into()).await;
        }
        platform::db::drop_database(&self.order_database)
            .await
            .unwrap();
        platform::db::drop_database(&self.product_database)
            .await
            .unwrap();
    }
}

/// Asserts the design's error body and returns its code.
pub(crate) fn error_code(status: u16, body: &Value, expected_status: u16) -> String {
    assert_eq!(status, expected_status, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    body["error"]["code"].as_str().unwrap().to_owned()
}
