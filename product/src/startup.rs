//! Building and running the product service: its database and migrations,
//! Redis, its share of the pipeline (relays, the stock consumer), and the
//! HTTP server.

use http_api::lifecycle::{Running, Starting, StartupError};
use outbox::pipeline::{Plan, Subscription};

use crate::cache::{CacheMetrics, ProductCache};
use crate::config::Config;
use crate::events::reservations::{ReservationHandler, ReservationMetrics};
use crate::http::AppState;
use crate::store::ProductStore;

/// Prepares the database, reaches Redis and starts everything. On
/// shutdown HTTP connections finish their requests first, then the relays
/// and the consumer their batch.
pub async fn build(config: Config) -> Result<Running, StartupError> {
    let migrations =
        outbox::schema::with_service(crate::migrations::runner(), crate::store::GRANTS);
    let starting = Starting::prepare(&config.database, &migrations, &config.http).await?;
    let registry = starting.metrics.registry();
    let cache = ProductCache::new(
        &config.redis_url,
        &config.redis_key_prefix,
        config.cache_ttl,
        CacheMetrics::register(registry)?,
    )
    .map_err(|error| StartupError::Dependency(format!("redis: {error}")))?;
    let topology = config.pipeline.topology();
    let reservations =
        ReservationHandler::new(cache.clone(), ReservationMetrics::register(registry)?);
    let plan = Plan {
        service: "product",
        exchange: topology.products_exchange(),
        subscriptions: vec![Subscription::new(
            topology.order_created_queue(),
            "stock consumer",
            reservations,
        )],
        busy_tables: &["products", "reservations"],
    };
    let pipeline = config
        .pipeline
        .start(
            plan,
            &starting.pools,
            &config.database.config,
            registry,
            &starting.stop,
        )
        .await?;
    let state = AppState {
        bridge: starting.bridge.clone(),
        store: ProductStore::new(starting.pools.runtime.clone()),
        cache,
    };
    let broker = Box::new(pipeline.broker_probe());
    let openapi = crate::openapi::DOCUMENT;
    starting.serve(&config.http, openapi, state, broker, pipeline.workers)
}
