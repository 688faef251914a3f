//! Building and running the order service: database, migrations, the
//! group-commit writer, the in-process relay, the two consumers, and the
//! HTTP server.

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

use crate::catalog::Catalog;
use crate::config::Config;
use crate::events::product_events::ProductEventHandler;
use crate::events::stock_replies::{ConfirmMetrics, StockReplyHandler};
use crate::http::{AppState, OrderApi};
use crate::store::OrderStore;
use crate::store::redrive::Redriver;
use crate::store::writer::{self, WriterMetrics};

/// The order service's own migrations, after the outbox library's.
pub const MIGRATIONS: &[MigrationSource] = &[
    (
        "V100__orders",
        include_str!("../migrations/V100__orders.sql"),
    ),
    (
        "V101__order_redrive",
        include_str!("../migrations/V101__order_redrive.sql"),
    ),
    (
        "V102__idempotency_key_partial",
        include_str!("../migrations/V102__idempotency_key_partial.sql"),
    ),
];

/// Every migration the order database needs, in order.
pub fn migrations() -> Vec<MigrationSource> {
    let mut all = outbox::schema::MIGRATIONS.to_vec();
    all.extend_from_slice(MIGRATIONS);
    all
}

/// A running order service.
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
        let topology = config.pipeline.topology();
        let consumer_metrics = ConsumerMetrics::register(registry)?;
        let (stop_workers, signal) = shutdown::channel();
        // The writers stop with the other workers, after the HTTP drain, so
        // every request still in flight gets its commit.
        let (writer, writers) = writer::start(
            &config.database,
            pool.clone(),
            config.writer.clone(),
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
        let drain = config.pipeline.dead_letter_drain(
            &pool,
            vec![replies_queue.clone(), topology.product_events_queue()],
            &consumer_metrics,
        );
        workers.push(tokio::spawn(drain.run(signal.clone())));
        let redriver = Redriver::new(pool.clone(), config.redrive, registry)?;
        workers.push(tokio::spawn(redriver.run(signal.clone())));
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
        // The writers stop with the other workers, after the HTTP drain.
        workers.extend(writers);
        let api = Arc::new(OrderApi::new(state.clone()));
        let running = Running::start(
            "order",
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
            "order service listening"
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
    /// finish their requests (their orders commit: the writers still run),
    /// then the writers, relays and consumers finish their batch.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        self.running.run_until_stopped(shutdown).await;
    }
}
