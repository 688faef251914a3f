//! `product reconcile`: rebuilds the Redis stock counters from PostgreSQL
//! (after Redis lost its data, say) and reports every counter it fixed.
//!
//! Safe while the service runs: a counter is only overwritten when it is
//! not newer than the SQL row just read, so a stock change committed and
//! synced meanwhile is never rolled back.

use std::time::Duration;

use crate::cache::{CacheMetrics, ProductCache};
use crate::config::Config;
use crate::store::{ProductStore, StoreError};

const PAGE: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Database(#[from] platform::db::DbError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// A counter that was missing or wrong, and what PostgreSQL says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    pub id: i64,
    pub sql_stock: i64,
    pub redis_stock: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    pub checked: u64,
    pub fixed: Vec<Drift>,
}

impl ReconcileReport {
    pub fn print(&self) {
        println!(
            "checked {} products; fixed {} stock counters",
            self.checked,
            self.fixed.len()
        );
        for drift in self.fixed.iter().take(50) {
            let redis = drift
                .redis_stock
                .map_or("missing".to_owned(), |stock| stock.to_string());
            println!(
                "  product {}: redis {redis} -> {}",
                drift.id, drift.sql_stock
            );
        }
        if self.fixed.len() > 50 {
            println!("  … and {} more", self.fixed.len() - 50);
        }
    }
}

/// Connects with the service's settings and reconciles every product.
pub async fn run(config: &Config) -> Result<ReconcileReport, ReconcileError> {
    let pool = platform::db::pool(&config.database.config, 2)?;
    let metrics = CacheMetrics::register(&prometheus::Registry::new())?;
    let cache = ProductCache::new(
        &config.redis_url,
        &config.redis_key_prefix,
        Duration::from_secs(1),
        metrics,
    )?;
    reconcile(&ProductStore::new(pool), &cache).await
}

/// Walks the products in id order, a page at a time.
pub async fn reconcile(
    store: &ProductStore,
    cache: &ProductCache,
) -> Result<ReconcileReport, ReconcileError> {
    let mut report = ReconcileReport::default();
    let mut after: i64 = 0;
    loop {
        let client = store.pool().get().await.map_err(StoreError::from)?;
        let rows = client
            .query(
                "SELECT id, stock, version FROM products WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after, &PAGE],
            )
            .await
            .map_err(StoreError::from)?;
        drop(client);
        let Some(last) = rows.last() else {
            return Ok(report);
        };
        after = last.get(0);
        let values: Vec<(i64, i64, i64)> = rows
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect();
        let mut before = Vec::with_capacity(values.len());
        for (id, _, _) in &values {
            before.push(cache.lookup(*id).await?.stock.map(|(stock, _)| stock));
        }
        let fixed = cache.reconcile(&values).await?;
        for (((id, sql_stock, _), redis_stock), was_fixed) in values.iter().zip(before).zip(fixed) {
            if was_fixed {
                report.fixed.push(Drift {
                    id: *id,
                    sql_stock: *sql_stock,
                    redis_stock,
                });
            }
        }
        report.checked += values.len() as u64;
    }
}
