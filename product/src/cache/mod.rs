//! Redis: the product cache by id, and the live stock counters.
//!
//! Keys (the part in braces is the Redis Cluster hash tag, so all keys of
//! one product live on one shard):
//! - `{prefix}product:{id}`: the product as JSON, with a TTL;
//! - `{prefix}product-fence:{id}`: the last written version, for a minute,
//!   so a reader that read before a write cannot cache the old value after it;
//! - `{prefix}stock:{id}`: hash of `stock` and `version`, the live counter.
//!
//! Every write invalidates the product's entry after its commit; every
//! committed stock change reaches the counter through a versioned script
//! (see [`scripts`]), so Redis converges on PostgreSQL whatever the order
//! or repetition of updates.

pub mod acl;
mod scripts;

use std::time::Duration;

use prometheus::{IntCounterVec, Opts, Registry};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Client, RedisResult, Script};

pub use scripts::TOMBSTONE_VERSION;

use crate::domain::Product;

/// How long a fence outlives a write; far longer than any read takes.
const FENCE_TTL_SECS: u64 = 60;

/// A committed stock change, as the counter should end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockUpdate {
    pub id: i64,
    /// Units taken by this change (0 when only seeding the counter).
    pub decrement: i64,
    pub stock: i64,
    pub version: i64,
}

/// What Redis holds for a product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub cached: Option<Product>,
    /// Live counter: (stock, version).
    pub stock: Option<(i64, i64)>,
}

/// Cache outcomes for `/metrics`.
#[derive(Clone)]
pub struct CacheMetrics {
    /// Lookups by result: hit, miss, error.
    pub lookups: IntCounterVec,
    /// Redis writes that failed (invalidations, fills, counter syncs).
    pub write_failures: IntCounterVec,
    /// Counters found drifted and repaired.
    pub drift_repairs: prometheus::IntCounter,
}

impl CacheMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = CacheMetrics {
            lookups: IntCounterVec::new(
                Opts::new(
                    "product_cache_lookups_total",
                    "Product cache lookups by result (hit, miss, error)",
                ),
                &["result"],
            )?,
            write_failures: IntCounterVec::new(
                Opts::new(
                    "product_cache_write_failures_total",
                    "Redis writes that failed, by kind",
                ),
                &["kind"],
            )?,
            drift_repairs: prometheus::IntCounter::new(
                "stock_counter_drift_repairs_total",
                "Stock counters found different from PostgreSQL and repaired",
            )?,
        };
        registry.register(Box::new(metrics.lookups.clone()))?;
        registry.register(Box::new(metrics.write_failures.clone()))?;
        registry.register(Box::new(metrics.drift_repairs.clone()))?;
        Ok(metrics)
    }
}

/// The product cache and stock counters.
#[derive(Clone)]
pub struct ProductCache {
    redis: ConnectionManager,
    prefix: String,
    ttl: Duration,
    metrics: CacheMetrics,
}

impl ProductCache {
    /// Connects lazily: the service starts (and answers from PostgreSQL)
    /// while Redis is down, and reconnects when it is back.
    pub fn new(url: &str, prefix: &str, ttl: Duration, metrics: CacheMetrics) -> RedisResult<Self> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let redis = ConnectionManager::new_lazy_with_config(Client::open(url)?, config)?;
        Ok(ProductCache {
            redis,
            prefix: prefix.to_owned(),
            ttl,
            metrics,
        })
    }

    pub fn product_key(&self, id: i64) -> String {
        format!("{}product:{{{id}}}", self.prefix)
    }

    pub fn fence_key(&self, id: i64) -> String {
        format!("{}product-fence:{{{id}}}", self.prefix)
    }

    pub fn stock_key(&self, id: i64) -> String {
        format!("{}stock:{{{id}}}", self.prefix)
    }

    pub fn metrics(&self) -> &CacheMetrics {
        &self.metrics
    }

    /// The cached product and the live counter, in one round trip.
    pub async fn lookup(&self, id: i64) -> RedisResult<Lookup> {
        let mut redis = self.redis.clone();
        let (json, (stock, version)): (Option<String>, (Option<i64>, Option<i64>)) = redis::pipe()
            .get(self.product_key(id))
            .cmd("HMGET")
            .arg(self.stock_key(id))
            .arg("stock")
            .arg("version")
            .query_async(&mut redis)
            .await?;
        // An entry that does not decode (an older layout) counts as a miss.
        let cached = json.and_then(|json| serde_json::from_str(&json).ok());
        Ok(Lookup {
            cached,
            stock: stock.zip(version),
        })
    }

    /// Caches `product` (read from PostgreSQL after a miss) unless a newer
    /// write fenced it, and seeds its counter if that is missing or older.
    pub async fn fill(&self, product: &Product) -> RedisResult<()> {
        let json = serde_json::to_string(product).map_err(|error| {
            redis::RedisError::from((
                redis::ErrorKind::Client,
                "product encoding",
                error.to_string(),
            ))
        })?;
        let mut redis = self.redis.clone();
        let _: i64 = Script::new(scripts::FILL)
            .key(self.product_key(product.id))
            .key(self.fence_key(product.id))
            .arg(json)
            .arg(product.version)
            .arg(self.ttl.as_secs())
            .invoke_async(&mut redis)
            .await?;
        self.sync_stock(&[StockUpdate {
            id: product.id,
            decrement: 0,
            stock: product.stock,
            version: product.version,
        }])
        .await
    }

    /// Drops the cached entry for a write of `version`, fencing out fills
    /// of anything older.
    pub async fn invalidate(&self, id: i64, version: i64) -> RedisResult<()> {
        let mut redis = self.redis.clone();
        let _: i64 = Script::new(scripts::INVALIDATE)
            .key(self.product_key(id))
            .key(self.fence_key(id))
            .arg(version)
            .arg(FENCE_TTL_SECS)
            .invoke_async(&mut redis)
            .await?;
        Ok(())
    }

    /// Applies committed stock changes to the counters; returns how many
    /// counters had drifted and were repaired.
    pub async fn sync_stock(&self, updates: &[StockUpdate]) -> RedisResult<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let script = Script::new(scripts::SYNC_STOCK);
        let mut invocation = script.prepare_invoke();
        for update in updates {
            invocation
                .key(self.stock_key(update.id))
                .arg(update.decrement)
                .arg(update.stock)
                .arg(update.version);
        }
        let mut redis = self.redis.clone();
        let drifted: u64 = invocation.invoke_async(&mut redis).await?;
        if drifted > 0 {
            tracing::warn!(
                drifted,
                "stock counters had drifted from PostgreSQL; repaired"
            );
            self.metrics.drift_repairs.inc_by(drifted);
        }
        Ok(())
    }

    /// Sets counters from SQL values; returns, per row, whether it was
    /// missing or wrong.
    pub async fn reconcile(&self, rows: &[(i64, i64, i64)]) -> RedisResult<Vec<bool>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let script = Script::new(scripts::RECONCILE_STOCK);
        let mut invocation = script.prepare_invoke();
        for (id, stock, version) in rows {
            invocation
                .key(self.stock_key(*id))
                .arg(*stock)
                .arg(*version);
        }
        let mut redis = self.redis.clone();
        let fixed: Vec<i64> = invocation.invoke_async(&mut redis).await?;
        Ok(fixed.into_iter().map(|flag| flag == 1).collect())
    }

    /// After a committed delete (its entry invalidated before the commit):
    /// tombstones the counter, so no late stock change brings it back.
    pub async fn tombstone_stock(&self, id: i64) -> RedisResult<()> {
        let mut redis = self.redis.clone();
        let _: i64 = Script::new(scripts::TOMBSTONE_STOCK)
            .key(self.stock_key(id))
            .invoke_async(&mut redis)
            .await?;
        Ok(())
    }

    /// Runs a Redis write, counting (not propagating) a failure: the SQL
    /// commit it follows stands, and the next write, the TTL or reconcile
    /// repairs Redis.
    pub async fn best_effort(
        &self,
        kind: &str,
        write: impl std::future::Future<Output = RedisResult<()>>,
    ) {
        if let Err(error) = write.await {
            self.metrics.write_failures.with_label_values(&[kind]).inc();
            tracing::warn!(%error, kind, "redis write failed after commit");
        }
    }

    pub async fn ping(&self) -> bool {
        let mut redis = self.redis.clone();
        redis.ping::<String>().await.is_ok()
    }
}
