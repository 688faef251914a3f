//! Products in PostgreSQL. Every write runs in a transaction that also
//! appends its event (`product.upserted` / `product.deleted`) to the outbox,
//! and bumps the row's `version`.

mod stock;

use platform::db::Grant;
use std::future::Future;

use deadpool_postgres::{Pool, Transaction};
use outbox::events::{PRODUCT_DELETED, PRODUCT_UPSERTED, ProductDeleted, ProductUpserted};
use outbox::writer::{self, NewEvent};
use tokio_postgres::Row;

pub use stock::{
    AdjustOutcome, LockedStock, Reservation, adjust_stock, lock_products, recorded_verdicts,
    reserve,
};

use crate::domain::{NewProduct, Product, ProductChanges};

pub use platform::db::StoreError;

pub type StoreResult<T> = Result<T, StoreError>;

const COLUMNS: &str = "id, name, price, stock, version, created_at, updated_at";

/// What a create came to.
#[derive(Debug)]
pub enum Created {
    New(Product),
    /// The Idempotency-Key created this product before, with the same body.
    Repeated(Product),
    /// The key was used before with another body.
    KeyReused,
    /// The key created a product that has been deleted since.
    Deleted(i64),
}

const CLAIM_CREATION_SQL: &str = "\
    INSERT INTO product_creations (idempotency_key, product_id, fingerprint) VALUES ($1, $2, $3) \
    ON CONFLICT (idempotency_key) DO NOTHING";

/// What a key's first use created.
async fn earlier_creation(
    client: &tokio_postgres::Client,
    key: &str,
    fingerprint: &str,
) -> StoreResult<Created> {
    let earlier = client
        .query_one(
            "SELECT product_id, fingerprint FROM product_creations WHERE idempotency_key = $1",
            &[&key],
        )
        .await?;
    let (id, earlier_fingerprint): (i64, String) = (earlier.try_get(0)?, earlier.try_get(1)?);
    if earlier_fingerprint != fingerprint {
        return Ok(Created::KeyReused);
    }
    let sql = format!("SELECT {COLUMNS} FROM products WHERE id = $1");
    Ok(match client.query_opt(&sql, &[&id]).await? {
        Some(row) => Created::Repeated(product_from(&row)?),
        None => Created::Deleted(id),
    })
}

pub(crate) fn product_from(row: &Row) -> Result<Product, tokio_postgres::Error> {
    Ok(Product {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        price: row.try_get(2)?,
        stock: row.try_get(3)?,
        version: row.try_get(4)?,
        created_at: row.try_get(5)?,
        updated_at: row.try_get(6)?,
    })
}

/// What the service's runtime role may do with its own tables (the
/// outbox library's are [`outbox::schema::GRANTS`]): the catalog's
/// writes, stock adjustments once per key, reservations once per order.
pub const GRANTS: &[Grant] = &[
    Grant::Table("products", "SELECT, INSERT, UPDATE, DELETE"),
    Grant::Table("product_creations", "SELECT, INSERT"),
    Grant::Table("stock_adjustments", "SELECT, INSERT"),
    Grant::Table("reservations", "SELECT, INSERT"),
];

/// The product store.
#[derive(Clone)]
pub struct ProductStore {
    pool: Pool,
}

impl ProductStore {
    pub fn new(pool: Pool) -> Self {
        ProductStore { pool }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Creates a product, once per `key` when there is one: a key used
    /// before answers with what its first use created.
    pub async fn create(&self, new: &NewProduct, key: Option<&str>) -> StoreResult<Created> {
        let sql = format!(
            "INSERT INTO products (name, price, stock) VALUES ($1, $2, $3) RETURNING {COLUMNS}"
        );
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let statement = tx.prepare_cached(&sql).await?;
        let row = tx
            .query_one(
                &statement,
                &[&new.name.as_str(), &new.price.cents(), &new.stock.units()],
            )
            .await?;
        let product = product_from(&row)?;
        if let Some(key) = key {
            let claim = tx.prepare_cached(CLAIM_CREATION_SQL).await?;
            let fingerprint = new.fingerprint();
            if tx
                .execute(&claim, &[&key, &product.id, &fingerprint])
                .await?
                == 0
            {
                // The first use committed (ON CONFLICT waited for it): this
                // transaction and its product roll back.
                drop(tx);
                return earlier_creation(&client, key, &fingerprint).await;
            }
        }
        append_upserted(&tx, &product).await?;
        writer::commit(tx).await?;
        Ok(Created::New(product))
    }

    pub async fn get(&self, id: i64) -> StoreResult<Option<Product>> {
        let sql = format!("SELECT {COLUMNS} FROM products WHERE id = $1");
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(&sql).await?;
        let row = client.query_opt(&statement, &[&id]).await?;
        Ok(row.as_ref().map(product_from).transpose()?)
    }

    /// Up to `limit` products with ids above `after`, in id order.
    pub async fn list(&self, after: i64, limit: i64) -> StoreResult<Vec<Product>> {
        let sql = format!("SELECT {COLUMNS} FROM products WHERE id > $1 ORDER BY id LIMIT $2");
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(&sql).await?;
        let rows = client.query(&statement, &[&after, &limit]).await?;
        Ok(rows.iter().map(product_from).collect::<Result<_, _>>()?)
    }

    /// Applies the given fields; `None` when there is no such product.
    /// `before_commit(id, version)` runs with the row written and locked,
    /// before the commit; if it fails, nothing is written.
    pub async fn update<Hook>(
        &self,
        id: i64,
        changes: &ProductChanges,
        before_commit: impl FnOnce(i64, i64) -> Hook,
    ) -> StoreResult<Option<Product>>
    where
        Hook: Future<Output = StoreResult<()>>,
    {
        let sql = format!(
            "UPDATE products SET name = COALESCE($2, name), price = COALESCE($3, price), \
             stock = COALESCE($4, stock), version = version + 1, updated_at = now() \
             WHERE id = $1 RETURNING {COLUMNS}"
        );
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let statement = tx.prepare_cached(&sql).await?;
        let name = changes.name.as_ref().map(|name| name.as_str());
        let price = changes.price.map(|price| price.cents());
        let stock = changes.stock.map(|stock| stock.units());
        let Some(row) = tx
            .query_opt(&statement, &[&id, &name, &price, &stock])
            .await?
        else {
            return Ok(None);
        };
        let product = product_from(&row)?;
        append_upserted(&tx, &product).await?;
        before_commit(product.id, product.version).await?;
        writer::commit(tx).await?;
        Ok(Some(product))
    }

    /// Deletes a product; returns the version its deletion carries, or
    /// `None` when there was no such product. `before_commit` as for
    /// [`ProductStore::update`].
    pub async fn delete<Hook>(
        &self,
        id: i64,
        before_commit: impl FnOnce(i64, i64) -> Hook,
    ) -> StoreResult<Option<i64>>
    where
        Hook: Future<Output = StoreResult<()>>,
    {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let statement = tx
            .prepare_cached("DELETE FROM products WHERE id = $1 RETURNING version")
            .await?;
        let Some(row) = tx.query_opt(&statement, &[&id]).await? else {
            return Ok(None);
        };
        let version: i64 = row.try_get::<_, i64>(0)? + 1;
        let event = ProductDeleted {
            product_id: id,
            version,
        };
        writer::append(&tx, &[NewEvent::new(id, PRODUCT_DELETED, &event)?]).await?;
        before_commit(id, version).await?;
        writer::commit(tx).await?;
        Ok(Some(version))
    }
}

async fn append_upserted(tx: &Transaction<'_>, product: &Product) -> StoreResult<()> {
    let event = ProductUpserted {
        product_id: product.id,
        name: product.name.clone(),
        price: product.price,
        version: product.version,
    };
    writer::append(tx, &[NewEvent::new(product.id, PRODUCT_UPSERTED, &event)?]).await?;
    Ok(())
}
