//! The writer's own PostgreSQL connection: the placing statement, prepared
//! once, and what the writer does when it outlives its batch's deadline or
//! the connection dies under it.
//!
//! The connection is the writer's, not a pool's, so the writer knows the
//! server process behind it. When the outcome of a placing statement is
//! unknown, ending that process settles it: once the process is gone its
//! transaction has either committed or rolled back, and a lookup of the
//! batch's order ids on a fresh connection tells which.
//!
//! With synchronous standbys (a Patroni cluster), a commit is not durable
//! until a standby has it. Two things can leave a commit that is only
//! local: a cancelled wait for the standby (the server then answers
//! success with a warning, which the session watches for), and a
//! connection lost during that wait. Either way the orders count as placed
//! only once they are found on the server that takes writes now (after a
//! failover, another one) and a later commit there has come back from a
//! standby without a warning: that commit's record follows theirs in the
//! log, so the standby has theirs too.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use outbox::writer;
use platform::db::{Notices, Server};
use time::OffsetDateTime;
use tokio::time::{Instant, timeout_at};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, NoTls, Statement};
use uuid::Uuid;

use super::plan::{BatchColumns, Prices};
use crate::domain::{Order, OrderStatus};
use crate::store::{ORDERS_BY_IDS_SQL, StoreError, StoreResult, order_from};

/// A whole batch in one statement, its own transaction: prices every
/// order's items from the product replica, inserts the orders whose every
/// product is known there and not deleted (an order whose key a committed
/// order holds is skipped), their items and their `order.created` events.
/// Orders without a key are inserted plainly: a speculative insertion
/// (`ON CONFLICT`) writes one more WAL record per row, and only a key can
/// conflict. Each line's product is looked up by its key (`LATERAL`,
/// `OFFSET 0`: the plan is generic, made for ten lines of unknown
/// products, and with sequential scans off it would otherwise walk the
/// whole replica's index into a hash or merge join in every batch).
/// It returns the orders inserted (id, creation time) and the replica's
/// view of every product of the batch (id, price, deleted; a product
/// unknown there comes back with no price), from which the writer answers
/// each request. Placeholders: three order columns, three item columns,
/// the owners' two, then the outbox's five.
static PLACE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH lines AS MATERIALIZED ( \
             SELECT l.order_id, l.product_id, l.quantity, r.price, r.deleted \
             FROM unnest($4::uuid[], $5::int8[], $6::int4[]) AS l(order_id, product_id, quantity) \
             LEFT JOIN LATERAL ( \
                 SELECT r.price, r.deleted FROM product_replica r \
                 WHERE r.id = l.product_id OFFSET 0) r ON true), \
         placeable AS ( \
             SELECT order_id, sum(quantity * price) AS total FROM lines GROUP BY order_id \
             HAVING bool_and(price IS NOT NULL AND NOT deleted)), \
         requested AS ( \
             SELECT o.id, p.total, o.key, o.fingerprint, o.issuer, o.subject \
             FROM unnest($1::uuid[], $2::text[], $3::text[], $7::text[], $8::text[]) \
                 AS o(id, key, fingerprint, issuer, subject) \
             JOIN placeable p ON p.order_id = o.id), \
         unkeyed AS ( \
             INSERT INTO orders (id, status, total, idempotency_key, fingerprint, owner_issuer, owner_subject) \
             SELECT id, '{pending}', total, key, fingerprint, issuer, subject \
             FROM requested WHERE key IS NULL \
             RETURNING id, created_at), \
         keyed AS ( \
             INSERT INTO orders (id, status, total, idempotency_key, fingerprint, owner_issuer, owner_subject) \
             SELECT id, '{pending}', total, key, fingerprint, issuer, subject \
             FROM requested WHERE key IS NOT NULL \
             ON CONFLICT (owner_issuer, owner_subject, idempotency_key) \
                 WHERE idempotency_key IS NOT NULL DO NOTHING \
             RETURNING id, created_at), \
         placed AS (SELECT * FROM unkeyed UNION ALL SELECT * FROM keyed), \
         items AS ( \
             INSERT INTO order_items (order_id, product_id, quantity, unit_price) \
             SELECT order_id, product_id, quantity, price FROM lines \
             WHERE order_id IN (SELECT id FROM placed)), \
         events AS ({} WHERE e.message_id IN (SELECT id FROM placed)) \
         SELECT id, created_at, NULL::int8, NULL::int8, NULL::bool FROM placed \
         UNION ALL \
         SELECT DISTINCT NULL::uuid, NULL::timestamptz, product_id, price, deleted FROM lines",
        writer::insert_sql(9),
        pending = OrderStatus::Pending.as_str(),
    )
});

/// How long the server gets to answer a cancel before the outcome counts
/// as unknown.
const CANCEL_ANSWER: Duration = Duration::from_millis(200);

/// The settings of the writer's sessions: keyed access as every pooled
/// connection has, and a `statement_timeout` so that the server stops a
/// statement of a writer that can no longer ask it to.
pub(super) fn settings(database: &Config, statement_timeout: Duration) -> Config {
    let timeout = statement_timeout.as_millis().to_string();
    let keyed = platform::db::with_session_settings(database.clone(), platform::db::KEYED_ACCESS);
    platform::db::with_session_settings(keyed, &[("statement_timeout", timeout.as_str())])
}

/// What a committed placing statement answered.
pub(super) struct Placement {
    /// The orders it inserted, with their creation time.
    pub(super) inserted: HashMap<Uuid, OffsetDateTime>,
    /// The replica's view of the batch's products.
    pub(super) prices: Prices,
}

/// What became of a placing statement.
pub(super) enum Written {
    Committed(Placement),
    /// The server refused or cancelled it: nothing was written.
    Refused(StoreError),
    /// Committed on the server, but its wait for a synchronous standby was
    /// cancelled: the orders may not be on any standby (the warning).
    Unreplicated(Placement, String),
    /// No answer came: the connection died, or stayed silent after a cancel.
    Unknown(String),
}

/// An open connection of the writer.
pub(super) struct Session {
    client: Client,
    notices: Notices,
    /// The server process serving it, and its server.
    backend: Backend,
    place: Statement,
}

/// A server process of the writer's: which server, which process.
#[derive(Debug, Clone)]
pub(super) struct Backend {
    pub(super) server: Server,
    pub(super) pid: i32,
}

impl Session {
    /// Connects (to the server that takes writes) and prepares the
    /// statement.
    pub(super) async fn open(config: &Config) -> StoreResult<Session> {
        let (client, notices) = platform::db::connect_watched(config)
            .await
            .map_err(StoreError::database_unavailable)?;
        let server = Server::of(&client).await?;
        if server.in_recovery {
            return Err(StoreError::database_unavailable(format!(
                "{server} takes no writes"
            )));
        }
        let pid = client
            .query_one("SELECT pg_backend_pid()", &[])
            .await?
            .try_get(0)?;
        let place = client.prepare(&PLACE_SQL).await?;
        Ok(Session {
            client,
            notices,
            backend: Backend { server, pid },
            place,
        })
    }

    pub(super) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    pub(super) fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Runs the placing statement for `batch`. A statement still running
    /// at `cancel_at` is cancelled, and the server's answer to that says
    /// whether it committed first.
    pub(super) async fn place(&self, batch: &BatchColumns<'_>, cancel_at: Instant) -> Written {
        let events = batch.event_columns();
        let mut params: Vec<&(dyn ToSql + Sync)> = batch.params().to_vec();
        params.extend(events.params());
        self.notices.clear();
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
            // Nothing else the statement runs warns: a warning is the
            // cancelled wait for a standby (its text depends on the
            // server's language, so any warning counts).
            Ok(rows) => match (placement(&rows), self.notices.warning()) {
                (Ok(placement), None) => Written::Committed(placement),
                (Ok(placement), Some(warning)) => Written::Unreplicated(placement, warning),
                (Err(error), _) => Written::Unknown(format!("committed rows unreadable: {error}")),
            },
            // The server answered with an error: the statement, which is
            // its own transaction, rolled back.
            Err(error) if error.as_db_error().is_some() => Written::Refused(error.into()),
            Err(error) => Written::Unknown(error.to_string()),
        }
    }
}

/// The placing statement's rows: an order inserted (id, time), or a
/// product of the batch as the replica sees it (id, price, deleted).
fn placement(rows: &[tokio_postgres::Row]) -> Result<Placement, tokio_postgres::Error> {
    let mut placement = Placement {
        inserted: HashMap::new(),
        prices: Prices::new(),
    };
    for row in rows {
        if let Some(id) = row.try_get::<_, Option<Uuid>>(0)? {
            placement.inserted.insert(id, row.try_get(1)?);
        } else if let (Some(product), Some(price)) = (
            row.try_get::<_, Option<i64>>(2)?,
            row.try_get::<_, Option<i64>>(3)?,
        ) {
            placement.prices.insert(
                product,
                (price, row.try_get::<_, Option<bool>>(4)?.unwrap_or(false)),
            );
        }
    }
    Ok(placement)
}

/// Why a batch's fate must be looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Doubt {
    /// The connection died (or stayed silent) under the statement.
    LostConnection,
    /// The statement committed, but not surely on a standby.
    Unreplicated,
}

/// Which of `orders` the server that takes writes now holds, durably: on
/// a fresh connection, by `by`. After a lost connection, if that is
/// `backend`'s own server, the process that ran their statement is ended
/// first (until it is gone it could still commit them); a process of
/// another server is left alone (after a failover the old primary's pids
/// are not this server's). Then the lookup, and a commit that must come
/// back from a synchronous standby without a warning (see the module's
/// documentation).
pub(super) async fn settle(
    config: &Config,
    backend: &Backend,
    doubt: Doubt,
    orders: &[Uuid],
    by: Instant,
) -> StoreResult<Settled> {
    let settled = timeout_at(by, async {
        let (client, notices) = platform::db::connect_watched(config)
            .await
            .map_err(StoreError::database_unavailable)?;
        let server = Server::of(&client).await?;
        let same_server = backend.server.is(&server);
        if same_server && doubt == Doubt::LostConnection {
            end_backend(&client, backend.pid).await?;
        }
        let rows = client.query(ORDERS_BY_IDS_SQL.as_str(), &[&orders]).await?;
        let found = rows
            .iter()
            .map(order_from)
            .collect::<StoreResult<Vec<_>>>()?;
        notices.clear();
        client
            .batch_execute(outbox::standby::STANDBY_CHECK_SQL)
            .await?;
        if let Some(warning) = notices.warning() {
            return Err(StoreError::database_unavailable(format!(
                "{server} could not confirm a standby has the orders: {warning}"
            )));
        }
        Ok(Settled { found, same_server })
    })
    .await;
    settled.unwrap_or_else(|_| {
        Err(StoreError::database_unavailable(
            "the lookup did not finish in time",
        ))
    })
}

/// What a settling lookup found.
pub(super) struct Settled {
    /// The orders the server holds, on a standby too.
    pub(super) found: Vec<Order>,
    /// Whether it was the server that ran their statement: if so, an order
    /// it lacks was never committed; if not (a failover came between), an
    /// order it lacks may still be committed on the old one.
    pub(super) same_server: bool,
}

/// Ends server process `pid` and waits until it is gone.
async fn end_backend(client: &Client, pid: i32) -> StoreResult<()> {
    client
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await?;
    loop {
        let gone: bool = client
            .query_one(
                "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)",
                &[&pid],
            )
            .await?
            .try_get(0)?;
        if gone {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
