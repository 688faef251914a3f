//! Building and running the order service: database, migrations, the
//! group-commit writer, the in-process relay, the two consumers, and the
//! HTTP server.

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

use crate::catalog::Catalog;
use crate::config::Config;
use crate::events::product_events::ProductEventHandler;
use crate::events::stock_replies::{ConfirmMetrics, StockReplyHandler};
use crate::http::{AppState, OrderApi};
use crate::store::OrderStore;
use crate::store::writer::{self, WriterMetrics};

/// The order service's own migrations, after the outbox library's.
pub const MIGRATIONS: &[MigrationSource] = &[(
    "V100__orders",
    include_str!("../migrations/V100__orders.sql"),
)];

/// Every migration the order database needs, in order.
pub fn migrations() -> Vec<MigrationSource> {
    let mut all = outbox::schema::MIGRATIONS.to_vec();
    all.extend_from_slice(MIGRATIONS);
    all
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// A running order service.
pub struct Application {
    server: Server,
    state: Arc<AppState>,
    stop_workers: Trigger,
    workers: Vec<JoinHandle<()>>,
    writers: Vec<JoinHandle<()>>,
}

impl Application {
    pub async fn build(config: Config) -> Result<Self, StartupError> {
        service::db::ensure_exists(&config.database).await?;
        service::db::migrate(&config.database, &migrations()).await?;
        let pool = service::db::pool(&config.database, config.database_pool_size)?;
        let metrics = Metrics::new();
        let registry = metrics.registry();
        let topology = config.pipeline.topology();
        let consumer_metrics = ConsumerMetrics::register(registry)?;
        let (stop_workers, signal) = shutdown::channel();
        // The writers stop with the other workers, after the HTTP drain, so
        // every request still in flight gets its commit.
        let (writer, writers) = writer::start(
            pool.clone(),
            config.writer,
            WriterMetrics::register(registry)?,
            signal.clone(),
        );
        let mut workers = Vec::new();
        workers.extend(config.pipeline.start_relays(
            &pool,
            &config.database,
            &topology.orders_exchange(),
            "order relay",
            &RelayMetrics::register(registry)?,
            &signal,
        ));
        let replies_queue = topology.stock_replies_queue();
        let replies = Consumer::new(
            Arc::new(StockReplyHandler::new(ConfirmMetrics::register(registry)?)),
            pool.clone(),
            topology.clone(),
            config
                .pipeline
                .consumer_config(&replies_queue, "order stock-reply consumer"),
            consumer_metrics.clone(),
        );
        workers.push(tokio::spawn(replies.run(signal.clone())));
        let products = Consumer::new(
            Arc::new(ProductEventHandler),
            pool.clone(),
            topology.clone(),
            config.pipeline.consumer_config(
                &topology.product_events_queue(),
                "order product-event consumer",
            ),
            consumer_metrics.clone(),
        );
        workers.push(tokio::spawn(products.run(signal.clone())));
        workers.push(tokio::spawn(outbox::retention::run(
            pool.clone(),
            config.pipeline.retention,
            &["orders", "order_items", "product_replica"],
            signal,
        )));
        let state = Arc::new(AppState {
            bridge: Bridge::new(
                tokio::runtime::Handle::current(),
                config.max_in_flight,
                config.request_timeout,
            ),
            store: OrderStore::new(pool),
            writer,
            catalog: Catalog::new(&config.product_url),
            metrics: metrics.clone(),
            consumer_metrics,
            stock_replies_queue: replies_queue,
            request_timeout: config.request_timeout,
        });
        let addr = format!("{}:{}", config.host, config.port);
        let api = Arc::new(OrderApi::new(state.clone()));
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
            "order service listening"
        );
        Ok(Application {
            server,
            state,
            stop_workers,
            workers,
            writers,
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
    /// finish their requests (their orders commit: the writers keep
    /// running), then the writers, relay and consumers finish their batch.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        tracing::info!("stopping: draining connections");
        if !self.server.shutdown(Duration::from_secs(5)).await {
            tracing::warn!("some connections were still open after 5 s");
        }
        self.stop_workers.fire();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
        for worker in self.workers.into_iter().chain(self.writers) {
            let _ = tokio::time::timeout_at(deadline, worker).await;
        }
        tracing::info!("order service stopped");
    }
}
