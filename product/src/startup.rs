//! Building and running the product service: database, migrations, Redis,
//! the in-process relay and consumer, and the HTTP server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use outbox::consumer::Consumer;
use outbox::metrics::{ConsumerMetrics, RelayMetrics};
use service::bridge::Bridge;
use service::db::MigrationSource;
use service::lifecycle::{Running, StartupError};
use service::metrics::Metrics;
use service::shutdown;

use crate::cache::{CacheMetrics, ProductCache};
use crate::config::Config;
use crate::events::reservations::{ReservationHandler, ReservationMetrics};
use crate::http::{AppState, ProductApi};
use crate::store::ProductStore;

/// The product service's own migrations, after the outbox library's.
pub const MIGRATIONS: &[MigrationSource] = &[
    (
        "V100__products",
        include_str!("../migrations/V100__products.sql"),
    ),
    (
        "V101__product_creations",
        include_str!("../migrations/V101__product_creations.sql"),
    ),
    (
        "V102__reservation_product",
        include_str!("../migrations/V102__reservation_product.sql"),
    ),
];

/// Every migration the product database needs, in order.
pub fn migrations() -> Vec<MigrationSource> {
    let mut all = outbox::schema::MIGRATIONS.to_vec();
    all.extend_from_slice(MIGRATIONS);
    all
}

/// A running product service.
pub struct Application {
    running: Running,
    state: Arc<AppState>,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        service::db::ensure_exists(&config.database).await?;
        service::db::migrate(&config.database, &migrations()).await?;
        let pool = service::db::pool(&config.database, config.database_pool_size)?;
        let metrics = Metrics::new();
        let registry = metrics.registry();
        let cache = ProductCache::new(
            &config.redis_url,
            &config.redis_key_prefix,
            config.cache_ttl,
            CacheMetrics::register(registry)?,
        )
        .map_err(|error| StartupError::Dependency(format!("redis: {error}")))?;
        let topology = config.pipeline.topology();
        let consumer_metrics = ConsumerMetrics::register(registry)?;
        let (stop_workers, signal) = shutdown::channel();
        let mut workers = Vec::new();
        workers.extend(config.pipeline.start_relays(
            &pool,
            &config.database,
            &topology.products_exchange(),
            "product relay",
            &RelayMetrics::register(registry)?,
            &signal,
        ));
        let handler = Arc::new(ReservationHandler::new(
            cache.clone(),
            ReservationMetrics::register(registry)?,
        ));
        let queue = topology.order_created_queue();
        let consumer_config = config
            .pipeline
            .consumer_config(&queue, "product stock consumer");
        let consumer = Consumer::new(
            handler,
            pool.clone(),
            topology,
            consumer_config,
            consumer_metrics.clone(),
        );
        workers.push(tokio::spawn(consumer.run(signal.clone())));
        let drain =
            config
                .pipeline
                .dead_letter_drain(&pool, vec![queue.clone()], &consumer_metrics);
        workers.push(tokio::spawn(drain.run(signal.clone())));
        workers.push(tokio::spawn(outbox::retention::run(
            pool.clone(),
            config.pipeline.retention,
            &["products", "reservations"],
            signal,
        )));
        let state = Arc::new(AppState {
            bridge: Bridge::new(
                tokio::runtime::Handle::current(),
                config.max_in_flight,
                config.request_timeout,
            ),
            store: ProductStore::new(pool),
            cache,
            metrics: metrics.clone(),
            consumer_metrics,
            order_created_queue: queue,
        });
        let api = Arc::new(ProductApi::new(state.clone()));
        let running = Running::start(
            "product",
            &config.host,
            config.port,
            api,
            &metrics,
            stop_workers,
            workers,
        )?;
        tracing::info!(
            addr = %running.local_addr(),
            database = %service::db::describe(&config.database),
            broker = %outbox::broker::describe(&config.pipeline.amqp_url),
            "product service listening"
        );
        Ok(Application { running, state })
    }

    pub fn port(&self) -> u16 {
        self.running.local_addr().port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.running.local_addr()
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Serves until `shutdown` completes, then drains: HTTP connections
    /// finish their requests, then the relays and consumer their batch.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        self.running.run_until_stopped(shutdown).await;
    }
}
