//! Orders and the product replica in PostgreSQL. Placing orders goes
//! through the [`writer`], re-driving orders left PENDING through
//! [`redrive`]; this module reads orders and keeps the replica.

pub mod redrive;
pub mod writer;

use deadpool_postgres::Pool;
use platform::db::Grant;
use tokio_postgres::Row;
use tokio_postgres::types::Json;
use uuid::Uuid;

use tokio_postgres::types::ToSql;

use crate::domain::{Order, OrderLine, OrderStatus, Owner, Readable};

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

/// [`LIST_SQL`] for one owner's orders (`$4` subject, `$5` issuer),
/// through `orders_by_owner`.
static LIST_OWN_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{ORDER_SELECT} WHERE o.owner_subject = $4 AND o.owner_issuer = $5 AND o.id > $1 \
             AND ($2::text IS NULL OR o.status = $2) \
         GROUP BY o.id ORDER BY o.id LIMIT $3"
    )
});

/// An order by id (`$1`).
static GET_SQL: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{ORDER_SELECT} WHERE o.id = $1 GROUP BY o.id"));

/// An order by id (`$1`) if it is the owner's (`$2` subject, `$3` issuer).
static GET_OWN_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{ORDER_SELECT} WHERE o.id = $1 AND o.owner_subject = $2 AND o.owner_issuer = $3 \
         GROUP BY o.id"
    )
});

/// The order an owner's Idempotency-Key made (`$1` key, `$2` issuer, `$3`
/// subject): the columns of `orders_idempotency_key_per_owner`.
static BY_KEY_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{ORDER_SELECT} WHERE o.idempotency_key = $1 AND o.owner_issuer = $2 \
             AND o.owner_subject = $3 \
         GROUP BY o.id"
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

/// What the service's runtime role may do with its own tables (the
/// outbox library's are [`outbox::schema::GRANTS`]): place orders and
/// decide them, keep the re-drive's place, mirror the catalog. Nothing is
/// ever deleted by the service.
pub const GRANTS: &[Grant] = &[
    Grant::Table("orders", "SELECT, INSERT, UPDATE"),
    Grant::Table("order_items", "SELECT, INSERT"),
    Grant::Table("order_redrive_cursor", "SELECT, UPDATE"),
    Grant::Table("product_replica", "SELECT, INSERT, UPDATE"),
];

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

    /// The order with this id, if the reader may see it: another's order
    /// is as absent as one that does not exist.
    pub async fn get(&self, id: Uuid, readable: &Readable) -> StoreResult<Option<Order>> {
        let client = self.pool.get().await?;
        let row = match readable {
            Readable::All => {
                let statement = client.prepare_cached(&GET_SQL).await?;
                client.query_opt(&statement, &[&id]).await?
            }
            Readable::Own(owner) => {
                let statement = client.prepare_cached(&GET_OWN_SQL).await?;
                client
                    .query_opt(&statement, &[&id, &owner.subject, &owner.issuer])
                    .await?
            }
        };
        row.as_ref().map(order_from).transpose()
    }

    /// The order the owner's Idempotency-Key made, with its request
    /// fingerprint.
    pub async fn get_by_key(
        &self,
        owner: &Owner,
        key: &str,
    ) -> StoreResult<Option<(Order, String)>> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(&BY_KEY_SQL).await?;
        let Some(row) = client
            .query_opt(&statement, &[&key, &owner.issuer, &owner.subject])
            .await?
        else {
            return Ok(None);
        };
        Ok(Some((order_from(&row)?, row.try_get(7)?)))
    }

    /// Up to `limit` orders the reader may see after `after` (by id, which
    /// is creation order), optionally of one status. Pending orders are found after the
    /// re-drive's low-water mark, or among those re-driven before (no
    /// index on the status: see `redrive`).
    pub async fn list(
        &self,
        readable: &Readable,
        after: Option<Uuid>,
        status: Option<OrderStatus>,
        limit: i64,
    ) -> StoreResult<Vec<Order>> {
        let client = self.pool.get().await?;
        let after = after.unwrap_or(Uuid::nil());
        let status_text = status.map(OrderStatus::as_str);
        let rows = match (readable, status) {
            (Readable::Own(owner), _) => {
                let statement = client.prepare_cached(&LIST_OWN_SQL).await?;
                let params: [&(dyn ToSql + Sync); 5] =
                    [&after, &status_text, &limit, &owner.subject, &owner.issuer];
                client.query(&statement, &params).await?
            }
            (Readable::All, Some(OrderStatus::Pending)) => {
                let statement = client.prepare_cached(&LIST_PENDING_SQL).await?;
                client
                    .query(&statement, &[&after, &status_text, &limit])
                    .await?
            }
            (Readable::All, _) => {
                let statement = client.prepare_cached(&LIST_SQL).await?;
                client
                    .query(&statement, &[&after, &status_text, &limit])
                    .await?
            }
        };
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
