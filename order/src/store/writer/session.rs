//! The writer's own PostgreSQL connection: the price read and the placing
//! statement, prepared once, and what the writer does when a statement
//! outlives its batch's deadline or the connection dies under it.
//!
//! The connection is the writer's, not a pool's, so the writer knows the
//! server process behind it. When the outcome of a placing statement is
//! unknown, ending that process settles it: once the process is gone its
//! transaction has either committed or rolled back, and a lookup of the
//! batch's order ids on a fresh connection tells which.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use outbox::writer::{self, EventColumns};
use time::OffsetDateTime;
use tokio::time::{Instant, timeout_at};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Statement};
use uuid::Uuid;

use super::plan::{OrderColumns, Priced, Prices, created_events};
use crate::store::{StoreError, StoreResult};

const PRICES_SQL: &str = "SELECT id, price, deleted FROM product_replica WHERE id = ANY($1)";

/// Orders, their items and their `order.created` events in one statement:
/// the items and events only of the orders it inserted (an order whose key
/// a committed order holds is not). Placeholders: the four order columns,
/// the four item columns, then the outbox's five.
static PLACE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH placed AS ( \
             INSERT INTO orders (id, status, total, idempotency_key, fingerprint) \
             SELECT id, 'PENDING', total, key, fingerprint \
             FROM unnest($1::uuid[], $2::int8[], $3::text[], $4::text[]) AS o(id, total, key, fingerprint) \
             ON CONFLICT (idempotency_key) DO NOTHING \
             RETURNING id, created_at), \
         items AS ( \
             INSERT INTO order_items (order_id, product_id, quantity, unit_price) \
             SELECT i.order_id, i.product_id, i.quantity, i.unit_price \
             FROM unnest($5::uuid[], $6::int8[], $7::int4[], $8::int8[]) \
                 AS i(order_id, product_id, quantity, unit_price) \
             WHERE i.order_id IN (SELECT id FROM placed)), \
         events AS ({} WHERE e.aggregate_id IN (SELECT id::text FROM placed)) \
         SELECT id, created_at FROM placed",
        writer::insert_sql(9)
    )
});

/// How long the server gets to answer a cancel before the outcome counts
/// as unknown.
const CANCEL_ANSWER: Duration = Duration::from_millis(200);

/// The settings of the writer's sessions: custom plans as every pooled
/// connection has, and a `statement_timeout` so that the server stops a
/// statement of a writer that can no longer ask it to.
pub(super) fn settings(database: &Config, statement_timeout: Duration) -> Config {
    let timeout = statement_timeout.as_millis().to_string();
    service::db::with_session_settings(
        database.clone(),
        &[
            service::db::CUSTOM_PLANS,
            ("statement_timeout", timeout.as_str()),
        ],
    )
}

/// What became of a placing statement.
pub(super) enum Written {
    /// Committed: the orders it inserted, with their creation time.
    Committed(HashMap<Uuid, OffsetDateTime>),
    /// The server refused or cancelled it: nothing was written.
    Refused(StoreError),
    /// No answer came: the connection died, or stayed silent after a cancel.
    Unknown(String),
}

/// An open connection of the writer.
pub(super) struct Session {
    client: Client,
    /// The server process serving it.
    backend_pid: i32,
    prices: Statement,
    place: Statement,
}

impl Session {
    /// Connects and prepares both statements.
    pub(super) async fn open(config: &Config) -> StoreResult<Session> {
        let client = service::db::connect(config)
            .await
            .map_err(|error| StoreError::Unavailable(error.to_string()))?;
        let backend_pid = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await?
            .try_get(0)?;
        let prices = client.prepare(PRICES_SQL).await?;
        let place = client.prepare(&PLACE_SQL).await?;
        Ok(Session {
            client,
            backend_pid,
            prices,
            place,
        })
    }

    pub(super) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    pub(super) fn backend_pid(&self) -> i32 {
        self.backend_pid
    }

    /// The replica's view of `products`. Read just before the insert,
    /// outside it: a price or deletion that lands in between is the same as
    /// the order having come a moment earlier (the product service rejects
    /// an order for a product deleted by then).
    pub(super) async fn prices(&self, products: &[i64]) -> StoreResult<Prices> {
        let rows = self.client.query(&self.prices, &[&products]).await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, (row.try_get(1)?, row.try_get(2)?))))
            .collect()
    }

    /// Inserts the orders with their items and events in one statement.
    /// A statement still running at `cancel_at` is cancelled, and the
    /// server's answer to that says whether it committed first.
    pub(super) async fn place(&self, priced: &[Priced], cancel_at: Instant) -> Written {
        let events = match created_events(priced) {
            Ok(events) => events,
            Err(error) => return Written::Refused(error.into()),
        };
        let columns = OrderColumns::of(priced);
        let event_columns = EventColumns::of(&events);
        let mut params: Vec<&(dyn ToSql + Sync)> = columns.params().to_vec();
        params.extend(event_columns.params());
        let query = self.client.query(&self.place, &params);
        tokio::pin!(query);
        let result = match timeout_at(cancel_at, &mut query).await {
            Ok(result) => result,
            Err(_) => {
                let cancel = self.client.cancel_token();
                let _ = tokio::time::timeout(CANCEL_ANSWER, cancel.cancel_query(NoTls)).await;
                match tokio::time::timeout(CANCEL_ANSWER, &mut query).await {
                    Ok(result) => result,
                    Err(_) => return Written::Unknown("no answer after a cancel".into()),
                }
            }
        };
        match result {
            Ok(rows) => match inserted(&rows) {
                Ok(inserted) => Written::Committed(inserted),
                Err(error) => Written::Unknown(format!("committed rows unreadable: {error}")),
            },
            // The server answered with an error: the statement, which is
            // its own transaction, rolled back.
            Err(error) if error.as_db_error().is_some() => Written::Refused(error.into()),
            Err(error) => Written::Unknown(error.to_string()),
        }
    }
}

fn inserted(
    rows: &[tokio_postgres::Row],
) -> Result<HashMap<Uuid, OffsetDateTime>, tokio_postgres::Error> {
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}

/// Which of `orders` exist, after making sure the server process
/// `backend_pid` (which ran their statement) is gone: until then it could
/// still commit them. On a fresh connection, by `by`.
pub(super) async fn settle(
    config: &Config,
    backend_pid: i32,
    orders: &[Uuid],
    by: Instant,
) -> StoreResult<HashMap<Uuid, OffsetDateTime>> {
    let settled = timeout_at(by, async {
        let client = service::db::connect(config)
            .await
            .map_err(|error| StoreError::Unavailable(error.to_string()))?;
        client
            .execute("SELECT pg_terminate_backend($1)", &[&backend_pid])
            .await?;
        loop {
            let gone: bool = client
                .query_one(
                    "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)",
                    &[&backend_pid],
                )
                .await?
                .try_get(0)?;
            if gone {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let rows = client
            .query(
                "SELECT id, created_at FROM orders WHERE id = ANY($1)",
                &[&orders],
            )
            .await?;
        Ok(inserted(&rows)?)
    })
    .await;
    settled.unwrap_or_else(|_| {
        Err(StoreError::Unavailable(
            "the lookup did not finish in time".into(),
        ))
    })
}
