//! Building and running the product service: database, migrations, Redis,
//! the in-process relay and consumer, and the HTTP server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use outbox::consumer::Consumer;
use outbox::metrics::{ConsumerMetrics, RelayMetrics};
use service::bridge::Bridge;
use service::db::{DbError, MigrationSource};
use service::http::{Server, ServerOptions};
use service::metrics::{HttpMetrics, Metrics};
use service::shutdown::{self, Trigger};
use tokio::task::JoinHandle;

use crate::cache::{CacheMetrics, ProductCache};
use crate::config::Config;
use crate::events::reservations::{ReservationHandler, ReservationMetrics};
use crate::http::{AppState, ProductApi};
use crate::store::ProductStore;

/// The product service's own migrations, after the outbox library's.
pub const MIGRATIONS: &[MigrationSource] = &[(
    "V100__products",
    include_str!("../migrations/V100__products.sql"),
)];

/// Every migration the product database needs, in order.
pub fn migrations() -> Vec<MigrationSource> {
    let mut all = outbox::schema::MIGRATIONS.to_vec();
    all.extend_from_slice(MIGRATIONS);
    all
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// A running product service.
pub struct Application {
    server: Server,
    state: Arc<AppState>,
    stop_workers: Trigger,
    workers: Vec<JoinHandle<()>>,
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
        )?;
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
        let addr = format!("{}:{}", config.host, config.port);
        let api = Arc::new(ProductApi::new(state.clone()));
        let server = Server::bind(
            addr.as_str(),
            api,
            HttpMetrics::register(registry)?,
            ServerOptions::default(),
        )
        .map_err(|source| StartupError::Bind { addr, source })?;
        tracing::info!(
            addr = %server.local_addr(),
            database = %service::db::describe(&config.database),
            broker = %outbox::broker::describe(&config.pipeline.amqp_url),
            "product service listening"
        );
        Ok(Application {
            server,
            state,
            stop_workers,
            workers,
        })
    }

    pub fn port(&self) -> u16 {
        self.server.local_addr().port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Serves until `shutdown` completes, then drains: HTTP connections
    /// finish their requests (up to 5 s), the relay and consumer finish
    /// their batch (up to 4 s more).
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        tracing::info!("stopping: draining connections");
        if !self.server.shutdown(Duration::from_secs(5)).await {
            tracing::warn!("some connections were still open after 5 s");
        }
        self.stop_workers.fire();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
        for worker in self.workers {
            let _ = tokio::time::timeout_at(deadline, worker).await;
        }
        tracing::info!("product service stopped");
    }
}
