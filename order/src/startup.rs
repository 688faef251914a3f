//! Building and running the order service: its database and migrations,
//! the group-commit writer, its share of the pipeline (relays, the
//! stock-reply and product-event consumers), the re-drive of orders left
//! pending, and the HTTP server.

use http_api::lifecycle::{Running, Starting, StartupError};
use outbox::pipeline::{Plan, Subscription};

use crate::catalog::Catalog;
use crate::config::Config;
use crate::events::product_events::ProductEventHandler;
use crate::events::stock_replies::{ConfirmMetrics, StockReplyHandler};
use crate::http::AppState;
use crate::store::OrderStore;
use crate::store::redrive::Redriver;
use crate::store::writer::{self, WriterMetrics};

/// Prepares the database and starts everything. On shutdown HTTP
/// connections finish their requests first (their orders commit: the
/// writers still run), then the writers, relays and consumers finish their
/// batch.
pub async fn build(config: Config) -> Result<Running, StartupError> {
    let migrations =
        outbox::schema::with_service(crate::migrations::runner(), crate::store::GRANTS);
    let starting = Starting::prepare(&config.database, &migrations, &config.http).await?;
    let registry = starting.metrics.registry();
    let topology = config.pipeline.topology();
    let plan = Plan {
        service: "order",
        exchange: topology.orders_exchange(),
        subscriptions: vec![
            Subscription::new(
                topology.stock_replies_queue(),
                "stock-reply consumer",
                StockReplyHandler::new(ConfirmMetrics::register(registry)?),
            ),
            Subscription::new(
                topology.product_events_queue(),
                "product-event consumer",
                ProductEventHandler,
            ),
        ],
        busy_tables: &["orders", "order_items", "product_replica"],
    };
    let (pool, stop) = (&starting.pools.runtime, &starting.stop);
    let pipeline = config
        .pipeline
        .start(
            plan,
            &starting.pools,
            &config.database.config,
            registry,
            stop,
        )
        .await?;
    // The writers stop with the other workers, after the HTTP drain, so
    // every request still in flight gets its commit.
    let (writer, mut workers) = writer::start(
        &config.database.config,
        pool.clone(),
        config.writer.clone(),
        WriterMetrics::register(registry)?,
        stop.clone(),
    );
    let redriver = Redriver::new(pool.clone(), config.redrive, registry)?;
    workers.push(tokio::spawn(redriver.run(stop.clone())));
    let broker = Box::new(pipeline.broker_probe());
    workers.extend(pipeline.workers);
    let state = AppState {
        bridge: starting.bridge.clone(),
        store: OrderStore::new(pool.clone()),
        writer,
        catalog: Catalog::new(&config.product_url),
        request_timeout: config.http.request_timeout,
    };
    starting.serve(
        &config.http,
        crate::openapi::DOCUMENT,
        state,
        broker,
        workers,
    )
}
