//! Stock changes in SQL: restocks through an idempotency key, and the
//! reservation statements the order.created consumer runs in its batch
//! transaction.

use std::future::Future;

use deadpool_postgres::{Pool, Transaction};
use serde_json::Value;
use uuid::Uuid;

use super::{COLUMNS, StoreResult, product_from};
use crate::domain::{MAX_STOCK, Product, StockDelta};

/// What a restock did.
#[derive(Debug)]
pub enum AdjustOutcome {
    Applied(Product),
    /// The key was used before with the same product and delta: the
    /// product as it is now, nothing changed.
    Repeated(Product),
    /// The key was used before for another product or delta.
    KeyReused,
    NotFound,
    /// Stock would leave 0..=10^9.
    OutOfRange {
        stock: i64,
    },
}

const CLAIM_KEY_SQL: &str = "\
    INSERT INTO stock_adjustments (idempotency_key, product_id, delta) VALUES ($1, $2, $3) \
    ON CONFLICT (idempotency_key) DO NOTHING";
const EARLIER_USE_SQL: &str =
    "SELECT product_id, delta FROM stock_adjustments WHERE idempotency_key = $1";

/// Adds `delta` to a product's stock, once per idempotency key.
/// `before_commit(id, version)` runs with the row written and locked,
/// before the commit; if it fails, nothing is written.
pub async fn adjust_stock<Hook>(
    pool: &Pool,
    id: i64,
    key: &str,
    delta: StockDelta,
    before_commit: impl FnOnce(i64, i64) -> Hook,
) -> StoreResult<AdjustOutcome>
where
    Hook: Future<Output = StoreResult<()>>,
{
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let claim = tx.prepare_cached(CLAIM_KEY_SQL).await?;
    if tx.execute(&claim, &[&key, &id, &delta.units()]).await? == 0 {
        // The first use committed (ON CONFLICT waited for it); compare.
        let earlier = tx.query_one(EARLIER_USE_SQL, &[&key]).await?;
        let (product_id, earlier_delta): (i64, i64) = (earlier.try_get(0)?, earlier.try_get(1)?);
        if (product_id, earlier_delta) != (id, delta.units()) {
            return Ok(AdjustOutcome::KeyReused);
        }
        let current = tx
            .query_opt(
                &format!("SELECT {COLUMNS} FROM products WHERE id = $1"),
                &[&id],
            )
            .await?;
        return Ok(match current {
            Some(row) => AdjustOutcome::Repeated(product_from(&row)?),
            None => AdjustOutcome::NotFound,
        });
    }
    let sql = format!(
        "UPDATE products SET stock = stock + $2, version = version + 1, updated_at = now() \
         WHERE id = $1 AND stock + $2 BETWEEN 0 AND {MAX_STOCK} RETURNING {COLUMNS}"
    );
    let update = tx.prepare_cached(&sql).await?;
    if let Some(row) = tx.query_opt(&update, &[&id, &delta.units()]).await? {
        let product = product_from(&row)?;
        before_commit(product.id, product.version).await?;
        tx.commit().await?;
        return Ok(AdjustOutcome::Applied(product));
    }
    // Nothing changed: the transaction rolls back, freeing the key.
    let stock = tx
        .query_opt("SELECT stock FROM products WHERE id = $1", &[&id])
        .await?;
    Ok(match stock {
        Some(row) => AdjustOutcome::OutOfRange {
            stock: row.try_get(0)?,
        },
        None => AdjustOutcome::NotFound,
    })
}

/// A product's stock as the reservation batch sees it, locked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockedStock {
    pub id: i64,
    pub stock: i64,
    pub version: i64,
}

impl LockedStock {
    /// A row of `id, stock, version`.
    fn from_row(row: &tokio_postgres::Row) -> StoreResult<Self> {
        Ok(LockedStock {
            id: row.try_get(0)?,
            stock: row.try_get(1)?,
            version: row.try_get(2)?,
        })
    }
}

/// Locks the products in id order: two consumers locking overlapping sets
/// wait for each other instead of deadlocking.
const LOCK_SQL: &str =
    "SELECT id, stock, version FROM products WHERE id = ANY($1) ORDER BY id FOR UPDATE";

pub async fn lock_products(tx: &Transaction<'_>, ids: &[i64]) -> StoreResult<Vec<LockedStock>> {
    let statement = tx.prepare_cached(LOCK_SQL).await?;
    let rows = tx.query(&statement, &[&ids]).await?;
    rows.iter().map(LockedStock::from_row).collect()
}

/// The conditional decrement: a row only changes if it has the stock, so
/// stock can never go negative whatever the caller computed.
const DECREMENT_SQL: &str = "\
    UPDATE products SET stock = products.stock - d.quantity, version = products.version + 1, updated_at = now() \
    FROM unnest($1::int8[], $2::int8[]) AS d(id, quantity) \
    WHERE products.id = d.id AND products.stock >= d.quantity \
    RETURNING products.id, products.stock, products.version";

/// Takes `quantity` from each product; returns the new stock and version of
/// each. Fails if any product lacked the stock (the caller checked under
/// lock, so that would be a bug, and the batch must not commit).
pub async fn decrement(
    tx: &Transaction<'_>,
    deltas: &[(i64, i64)],
) -> StoreResult<Vec<LockedStock>> {
    if deltas.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = deltas.iter().map(|(id, _)| *id).collect();
    let quantities: Vec<i64> = deltas.iter().map(|(_, quantity)| *quantity).collect();
    let statement = tx.prepare_cached(DECREMENT_SQL).await?;
    let rows = tx.query(&statement, &[&ids, &quantities]).await?;
    if rows.len() != deltas.len() {
        return Err(super::StoreError::Constraint("products_stock_range".into()));
    }
    rows.iter().map(LockedStock::from_row).collect()
}

/// One verdict per order.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub order_id: Uuid,
    pub message_id: Uuid,
    pub reserved: bool,
    pub reason: Option<&'static str>,
    pub items: Value,
}

const RECORD_VERDICTS_SQL: &str = "\
    INSERT INTO reservations (order_id, message_id, status, reason, items) \
    SELECT order_id, message_id, status, reason, items::jsonb \
    FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[]) \
        AS v(order_id, message_id, status, reason, items)";

pub async fn record_verdicts(tx: &Transaction<'_>, verdicts: &[Verdict]) -> StoreResult<()> {
    if verdicts.is_empty() {
        return Ok(());
    }
    let orders: Vec<Uuid> = verdicts.iter().map(|v| v.order_id).collect();
    let messages: Vec<Uuid> = verdicts.iter().map(|v| v.message_id).collect();
    let statuses: Vec<&str> = verdicts
        .iter()
        .map(|v| if v.reserved { "reserved" } else { "rejected" })
        .collect();
    let reasons: Vec<Option<&str>> = verdicts.iter().map(|v| v.reason).collect();
    let items: Vec<String> = verdicts.iter().map(|v| v.items.to_string()).collect();
    let statement = tx.prepare_cached(RECORD_VERDICTS_SQL).await?;
    tx.execute(
        &statement,
        &[&orders, &messages, &statuses, &reasons, &items],
    )
    .await?;
    Ok(())
}
