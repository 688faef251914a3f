//! Orders and the product replica in PostgreSQL. Placing orders goes
//! through the [`writer`], re-driving orders left PENDING through
//! [`redrive`]; this module reads orders and keeps the replica.

pub mod redrive;
pub mod writer;

use deadpool_postgres::Pool;
use tokio_postgres::Row;
use tokio_postgres::types::Json;
use uuid::Uuid;

use crate::domain::{Order, OrderLine, OrderStatus};

pub use platform::db::StoreError;

pub type StoreResult<T> = Result<T, StoreError>;

/// An order with its lines aggregated, in one statement.
const ORDER_SELECT: &str = "\
    SELECT o.id, o.status, o.reason, o.total, o.created_at, o.decided_at, \
        json_agg(json_build_object('product_id', i.product_id, 'quantity', i.quantity, 'unit_price', i.unit_price) \
            ORDER BY i.product_id), \
        o.fingerprint \
    FROM orders o JOIN order_items i ON i.order_id = o.id";

/// A page of orders after `$1`, of status `$2` if given, `$3` at most.
static LIST_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{ORDER_SELECT} WHERE o.id > $1 AND ($2::text IS NULL OR o.status = $2) \
         GROUP BY o.id ORDER BY o.id LIMIT $3"
    )
});

/// [`LIST_SQL`] for pending orders: every one is past the re-drive's
/// low-water mark or has been re-driven (`orders_redriven`).
static LIST_PENDING_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{ORDER_SELECT} WHERE o.id > $1 AND o.status = $2 \
             AND (o.id >= (SELECT low FROM order_redrive_cursor) OR o.redrive_at IS NOT NULL) \
         GROUP BY o.id ORDER BY o.id LIMIT $3"
    )
});

/// Orders by id (`$1`, an array), with their lines.
pub(crate) static ORDERS_BY_IDS_SQL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{ORDER_SELECT} WHERE o.id = ANY($1) GROUP BY o.id"));

pub(crate) fn order_from(row: &Row) -> StoreResult<Order> {
    let status: String = row.try_get(1)?;
    let Json(items): Json<Vec<OrderLine>> = row.try_get(6)?;
    Ok(Order {
        id: row.try_get(0)?,
        status: OrderStatus::parse(&status).unwrap_or(OrderStatus::Pending),
        reason: row.try_get(2)?,
        total: row.try_get(3)?,
        created_at: row.try_get(4)?,
        decided_at: row.try_get(5)?,
        items,
    })
}

/// What the replica knows of a product.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ProductSnapshot {
    pub id: i64,
    pub name: String,
    pub price: i64,
    pub version: i64,
}

/// Upserts replica rows, each only over an older version. Deleted
/// products stay as tombstones, so a late upsert cannot bring them back.
pub const REPLICA_UPSERT_SQL: &str = "\
    INSERT INTO product_replica (id, name, price, version, deleted) \
    SELECT * FROM unnest($1::int8[], $2::text[], $3::int8[], $4::int8[], $5::bool[]) \
    ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, price = EXCLUDED.price, \
        version = EXCLUDED.version, deleted = EXCLUDED.deleted, updated_at = now() \
    WHERE product_replica.version < EXCLUDED.version";

/// Reading orders; keeping the replica.
#[derive(Clone)]
pub struct OrderStore {
    pool: Pool,
}

impl OrderStore {
    pub fn new(pool: Pool) -> Self {
        OrderStore { pool }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub async fn get(&self, id: Uuid) -> StoreResult<Option<Order>> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(&format!("{ORDER_SELECT} WHERE o.id = $1 GROUP BY o.id"))
            .await?;
        let row = client.query_opt(&statement, &[&id]).await?;
        row.as_ref().map(order_from).transpose()
    }

    /// The order an Idempotency-Key made, with its request fingerprint.
    pub async fn get_by_key(&self, key: &str) -> StoreResult<Option<(Order, String)>> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(&format!(
                "{ORDER_SELECT} WHERE o.idempotency_key = $1 GROUP BY o.id"
            ))
            .await?;
        let Some(row) = client.query_opt(&statement, &[&key]).await? else {
            return Ok(None);
        };
        Ok(Some((order_from(&row)?, row.try_get(7)?)))
    }

    /// Up to `limit` orders after `after` (by id, which is creation order),
    /// optionally of one status. Pending orders are found after the
    /// re-drive's low-water mark, or among those re-driven before (no
    /// index on the status: see `redrive`).
    pub async fn list(
        &self,
        after: Option<Uuid>,
        status: Option<OrderStatus>,
        limit: i64,
    ) -> StoreResult<Vec<Order>> {
        let client = self.pool.get().await?;
        let sql = match status {
            Some(OrderStatus::Pending) => &*LIST_PENDING_SQL,
            _ => &*LIST_SQL,
        };
        let statement = client.prepare_cached(sql).await?;
        let status = status.map(OrderStatus::as_str);
        let rows = client
            .query(
                &statement,
                &[&after.unwrap_or(Uuid::nil()), &status, &limit],
            )
            .await?;
        rows.iter().map(order_from).collect()
    }

    /// Records a product learnt from the product service (replica miss).
    pub async fn record_product(&self, product: &ProductSnapshot) -> StoreResult<()> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(REPLICA_UPSERT_SQL).await?;
        client
            .execute(
                &statement,
                &[
                    &vec![product.id],
                    &vec![product.name.as_str()],
                    &vec![product.price],
                    &vec![product.version],
                    &vec![false],
                ],
            )
            .await?;
        Ok(())
    }
}
