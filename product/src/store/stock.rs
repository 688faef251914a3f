//! Stock changes in SQL: restocks through an idempotency key, and the
//! reservation statements the order.created consumer runs in its batch
//! transaction.

use std::future::Future;

use std::collections::HashMap;

use std::sync::LazyLock;

use deadpool_postgres::{Pool, Transaction};
use outbox::events::{OrderItem, RejectReason, Verdict};
use outbox::writer::{self, EventColumns, NewEvent};
use tokio_postgres::types::{Json, ToSql};
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

/// A batch's effect in one statement: the conditional decrement (a row
/// only changes if it has the stock, so stock can never go negative
/// whatever the caller computed), the reservations, and the replies'
/// outbox rows. A reservation another consumer recorded meanwhile is kept:
/// that can only be an order none of whose products exists (an order with
/// products is decided under their row locks, and the verdicts are read
/// after them), a rejection that moved no stock either way. Only those
/// (`unlocked`: rejected for an unknown product) are inserted with
/// `ON CONFLICT`; a speculative insertion writes one more WAL record per
/// row. Returns the new stock and version of each product taken from.
/// Placeholders: the decrements' two columns, the reservations' seven,
/// the outbox's five.
static RESERVE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH decremented AS ( \
             UPDATE products SET stock = products.stock - d.quantity, \
                 version = products.version + 1, updated_at = now() \
             FROM unnest($1::int8[], $2::int8[]) AS d(id, quantity) \
             WHERE products.id = d.id AND products.stock >= d.quantity \
             RETURNING products.id, products.stock, products.version), \
         verdicts AS ( \
             SELECT * FROM unnest($3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::int8[], \
                                  $8::jsonb[], $9::bool[]) \
                 AS v(order_id, message_id, status, reason, product_id, items, unlocked)), \
         reserved AS ( \
             INSERT INTO reservations (order_id, message_id, status, reason, product_id, items) \
             SELECT order_id, message_id, status, reason, product_id, items FROM verdicts \
             WHERE NOT unlocked), \
         reserved_unlocked AS ( \
             INSERT INTO reservations (order_id, message_id, status, reason, product_id, items) \
             SELECT order_id, message_id, status, reason, product_id, items FROM verdicts \
             WHERE unlocked \
             ON CONFLICT (order_id) DO NOTHING), \
         replies AS ({}) \
         SELECT id, stock, version FROM decremented",
        writer::insert_sql(10)
    )
});

/// Takes `quantity` from each product, records the reservations and
/// appends the replies, in one statement of `tx`. Fails if any product
/// lacked the stock (the caller decided under lock, so that would be a
/// bug, and the batch must not commit).
pub async fn reserve(
    tx: &Transaction<'_>,
    deltas: &[(i64, i64)],
    reservations: &[Reservation<'_>],
    replies: &[NewEvent],
) -> StoreResult<Vec<LockedStock>> {
    let ids: Vec<i64> = deltas.iter().map(|(id, _)| *id).collect();
    let quantities: Vec<i64> = deltas.iter().map(|(_, quantity)| *quantity).collect();
    let orders: Vec<Uuid> = reservations.iter().map(|r| r.order_id).collect();
    let messages: Vec<Uuid> = reservations.iter().map(|r| r.message_id).collect();
    let columns: Vec<_> = reservations
        .iter()
        .map(|r| verdict_columns(r.verdict))
        .collect();
    let statuses: Vec<&str> = columns.iter().map(|c| c.0).collect();
    let reasons: Vec<Option<&str>> = columns.iter().map(|c| c.1).collect();
    let products: Vec<Option<i64>> = columns.iter().map(|c| c.2).collect();
    let items: Vec<Json<&[OrderItem]>> = reservations.iter().map(|r| Json(r.items)).collect();
    let unlocked: Vec<bool> = reservations
        .iter()
        .map(|r| {
            matches!(
                r.verdict,
                Verdict::Rejected {
                    reason: RejectReason::UnknownProduct,
                    ..
                }
            )
        })
        .collect();
    let events = EventColumns::of(replies);
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![
        &ids,
        &quantities,
        &orders,
        &messages,
        &statuses,
        &reasons,
        &products,
        &items,
        &unlocked,
    ];
    params.extend(events.params());
    let statement = tx.prepare_cached(&RESERVE_SQL).await?;
    let rows = tx.query(&statement, &params).await?;
    if rows.len() != deltas.len() {
        return Err(super::StoreError::Constraint("products_stock_range".into()));
    }
    rows.iter().map(LockedStock::from_row).collect()
}

/// An order's reservation as the stock loop records it.
#[derive(Debug, Clone)]
pub struct Reservation<'a> {
    pub order_id: Uuid,
    pub message_id: Uuid,
    pub verdict: Verdict,
    pub items: &'a [OrderItem],
}

/// The columns a verdict is kept in: status, reason, product not served.
fn verdict_columns(verdict: Verdict) -> (&'static str, Option<&'static str>, Option<i64>) {
    match verdict {
        Verdict::Reserved => ("reserved", None, None),
        Verdict::Rejected { reason, product_id } => {
            ("rejected", Some(reason.as_str()), Some(product_id))
        }
    }
}

/// A verdict from its columns; `None` for a row no verdict writes.
fn verdict_from(status: &str, reason: Option<&str>, product_id: i64) -> Option<Verdict> {
    match status {
        "reserved" => Some(Verdict::Reserved),
        "rejected" => Some(Verdict::Rejected {
            reason: RejectReason::parse(reason?)?,
            product_id,
        }),
        _ => None,
    }
}

/// The verdicts recorded for these orders. A rejection recorded before
/// the product column existed names the order's first product.
const RECORDED_VERDICTS_SQL: &str = "\
    SELECT order_id, status, reason, \
        COALESCE(product_id, (items -> 0 ->> 'product_id')::int8, 0) \
    FROM reservations WHERE order_id = ANY($1)";

pub async fn recorded_verdicts(
    tx: &Transaction<'_>,
    orders: &[Uuid],
) -> StoreResult<HashMap<Uuid, Verdict>> {
    if orders.is_empty() {
        return Ok(HashMap::new());
    }
    let statement = tx.prepare_cached(RECORDED_VERDICTS_SQL).await?;
    let rows = tx.query(&statement, &[&orders]).await?;
    let mut recorded = HashMap::with_capacity(rows.len());
    for row in rows {
        let (order, status, reason, product): (Uuid, String, Option<String>, i64) = (
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
        );
        if let Some(verdict) = verdict_from(&status, reason.as_deref(), product) {
            recorded.insert(order, verdict);
        }
    }
    Ok(recorded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_comes_back_from_its_columns() {
        for verdict in [
            Verdict::Reserved,
            Verdict::Rejected {
                reason: RejectReason::InsufficientStock,
                product_id: 4,
            },
        ] {
            let (status, reason, product) = verdict_columns(verdict);
            assert_eq!(
                verdict_from(status, reason, product.unwrap_or(0)),
                Some(verdict)
            );
        }
        assert_eq!(verdict_from("rejected", Some("no idea"), 1), None);
    }
}
