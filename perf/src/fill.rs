//! `perf fill`: grows both databases the way weeks of traffic would, fast,
//! so that load and soak runs measure tables of the size users have (the
//! cost of an index insert, a vacuum, a plan grows with them). Orders
//! (decided, with their items) go into the order database, their
//! reservations into the product database, and their events into both
//! outboxes as sent history, all written in SQL, a chunk per statement.
//! Run it with the services stopped.
//!
//! It writes to whichever outbox the database has: the append-only one
//! (rows written now, the relays' cursors moved past them) or the one from
//! before it (rows marked published, written over the last hour).

use tokio_postgres::Client;

/// Orders per round: a few seconds of writing, so no transaction grows
/// large.
const CHUNK: i64 = 100_000;

/// Orders the order database holds (an estimate: an exact count of
/// millions of rows is a full scan).
pub async fn order_count(orders: &Client) -> anyhow::Result<i64> {
    Ok(orders
        .query_one(
            "SELECT GREATEST(reltuples, 0)::int8 FROM pg_class WHERE oid = 'orders'::regclass",
            &[],
        )
        .await?
        .get(0))
}

/// An order id as the writer makes them (UUIDv7) for the time `t`.
const ID_AT: &str = "(lpad(to_hex((extract(epoch FROM t) * 1000)::int8), 12, '0') || '7' \
    || substr(md5(random()::text), 1, 3) || '8' || substr(md5(random()::text), 1, 15))::uuid";

/// Whether the outbox is append-only (its relays keep a cursor: named
/// `outbox_relay_cursor` since migration 9, `outbox_cursor` before).
pub(crate) const APPEND_ONLY_SQL: &str = "SELECT to_regclass('outbox_relay_cursor') IS NOT NULL \
     OR to_regclass('outbox_cursor') IS NOT NULL";

/// Which outbox a database has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outbox {
    AppendOnly,
    Marked,
}

impl Outbox {
    async fn of(client: &Client) -> anyhow::Result<Self> {
        let append_only: bool = client.query_one(APPEND_ONLY_SQL, &[]).await?.get(0);
        Ok(if append_only {
            Outbox::AppendOnly
        } else {
            Outbox::Marked
        })
    }

    /// Inserts a sent event of type `event_type` for each order id of
    /// `$1`, its payload `payload` (SQL over `id`).
    fn history_sql(self, event_type: &str, payload: &str) -> String {
        let rows = format!(
            "SELECT gen_random_uuid(), id::text, (abs(hashtext(id::text)) % 16)::int2, \
                 '{event_type}', {payload}, \
                 now() - random() * interval '1 hour' \
             FROM unnest($1::uuid[]) AS id"
        );
        match self {
            Outbox::AppendOnly => format!(
                "INSERT INTO outbox (message_id, aggregate_id, partition, event_type, payload) \
                 SELECT m, a, p, e, y FROM ({rows}) AS r(m, a, p, e, y, t)"
            ),
            Outbox::Marked => format!(
                "INSERT INTO outbox (message_id, aggregate_id, partition, event_type, payload, \
                     created_at, published_at) \
                 SELECT m, a, p, e, y, t, t + interval '50 ms' FROM ({rows}) AS r(m, a, p, e, y, t)"
            ),
        }
    }

    /// After the history is written: the append-only outbox's relays move
    /// past it (nothing else may be waiting: checked before).
    async fn settle(self, client: &Client) -> anyhow::Result<()> {
        if self == Outbox::AppendOnly {
            // The cursor's table of this release, or of the releases
            // before it (an older build measured with its perf). The
            // services are stopped (`assert_idle`): no writer is in flight,
            // so the current snapshot sees every row below the cursor.
            let renamed: bool = client
                .query_one("SELECT to_regclass('outbox_relay_cursor') IS NOT NULL", &[])
                .await?
                .get(0);
            let cursor = if renamed {
                "outbox_relay_cursor"
            } else {
                "outbox_cursor"
            };
            client
                .batch_execute(&format!(
                    "UPDATE {cursor} SET \
                         released_id = array_fill((SELECT max(id) FROM outbox), ARRAY[16]), \
                         released_snapshot = array_fill(pg_current_snapshot(), ARRAY[16])"
                ))
                .await?;
        }
        Ok(())
    }

    async fn assert_idle(self, client: &Client) -> anyhow::Result<()> {
        if self == Outbox::AppendOnly {
            let waiting: i64 = client
                .query_one("SELECT count(*) FROM outbox_pending", &[])
                .await?
                .get(0);
            anyhow::ensure!(
                waiting == 0,
                "{waiting} outbox rows are still to send: stop the services and let them drain first"
            );
        }
        Ok(())
    }
}

/// Adds `count` decided orders of product `product` (price 100, quantity
/// 1), placed over the `days` before an hour ago, to both databases.
pub async fn fill(
    orders: &Client,
    products: &Client,
    count: i64,
    product: i64,
    days: i64,
) -> anyhow::Result<()> {
    let order_outbox = Outbox::of(orders).await?;
    let product_outbox = Outbox::of(products).await?;
    order_outbox.assert_idle(orders).await?;
    product_outbox.assert_idle(products).await?;
    let items =
        format!("json_build_array(json_build_object('product_id', {product}, 'quantity', 1))");
    let mut done = 0;
    while done < count {
        let rows = CHUNK.min(count - done);
        let ids: Vec<uuid::Uuid> = orders
            .query(
                &format!(
                    "WITH placed AS ( \
                         INSERT INTO orders (id, status, total, fingerprint, created_at, decided_at) \
                         SELECT {ID_AT}, 'CONFIRMED', 100, '{product}x1', t, t + interval '50 ms' \
                         FROM (SELECT now() - interval '1 hour' - random() * $1::int8 * interval '1 day' AS t \
                               FROM generate_series(1, $2::int8)) s \
                         RETURNING id), \
                     items AS ( \
                         INSERT INTO order_items (order_id, product_id, quantity, unit_price) \
                         SELECT id, {product}, 1, 100 FROM placed) \
                     SELECT id FROM placed"
                ),
                &[&days, &rows],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        orders
            .execute(
                &order_outbox.history_sql(
                    "order.created",
                    &format!("json_build_object('order_id', id, 'items', {items})::jsonb"),
                ),
                &[&ids],
            )
            .await?;
        products
            .execute(
                &format!(
                    "INSERT INTO reservations (order_id, message_id, status, items) \
                     SELECT id, id, 'reserved', {items}::jsonb FROM unnest($1::uuid[]) AS id"
                ),
                &[&ids],
            )
            .await?;
        products
            .execute(
                &product_outbox
                    .history_sql("stock.reserved", "json_build_object('order_id', id)::jsonb"),
                &[&ids],
            )
            .await?;
        done += rows;
        eprintln!("filled {done} of {count} orders");
    }
    order_outbox.settle(orders).await?;
    product_outbox.settle(products).await?;
    settle_redrive(orders).await?;
    for client in [orders, products] {
        // Statistics for the planner, hint bits and the visibility map,
        // as the tables of a system that has run for weeks have.
        client.batch_execute("VACUUM ANALYZE").await?;
    }
    // And their pages on disk: a run that starts right after the fill
    // would otherwise measure the server writing out gigabytes of it.
    // It needs the pg_checkpoint role: without it, the run just pays.
    if let Err(error) = orders.batch_execute("CHECKPOINT").await {
        eprintln!("no CHECKPOINT after the fill ({error}): the server writes it out on its own");
    }
    Ok(())
}

/// The re-drive's low-water mark moves past the orders written here (all
/// decided), up to the first order still pending, as it would have while
/// they were placed: the order service would otherwise start by reading
/// every one of them in search of pending ones. (A database from before
/// the mark has none to move.)
async fn settle_redrive(orders: &Client) -> anyhow::Result<()> {
    let has_mark: bool = orders
        .query_one(
            "SELECT to_regclass('order_redrive_cursor') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if has_mark {
        orders
            .batch_execute(
                "UPDATE order_redrive_cursor SET low = GREATEST(low, COALESCE( \
                     (SELECT id FROM orders WHERE status = 'PENDING' ORDER BY id LIMIT 1), \
                     (SELECT id FROM orders ORDER BY id DESC LIMIT 1)))",
            )
            .await?;
    }
    Ok(())
}
