//! The invariants of the stock loop, read from the stores themselves:
//!
//! - SQL stock = initial stock + Σ restocks − Σ quantities of CONFIRMED
//!   orders, and never negative;
//! - the Redis counter of every product equals its SQL stock;
//! - no order is left PENDING once the pipeline has drained, and the
//!   product service decided each order exactly once, the same way the
//!   order service recorded it;
//! - the order service's replica of every product is the product (name,
//!   price, deleted): its events are ones nothing re-drives.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use tokio_postgres::Client;
use uuid::Uuid;

/// Where to read: both databases and the product service's Redis.
pub struct Stores {
    pub orders: Client,
    pub products: Client,
    pub redis: redis::aio::MultiplexedConnection,
    pub redis_prefix: String,
}

impl Stores {
    /// Connects as `perf-invariants` (visible in pg_stat_activity, and
    /// spared by tests that terminate the services' connections).
    pub async fn connect(
        orders: &tokio_postgres::Config,
        products: &tokio_postgres::Config,
        redis_url: &str,
        redis_prefix: &str,
    ) -> anyhow::Result<Self> {
        let named = |config: &tokio_postgres::Config| {
            let mut config = config.clone();
            config.application_name("perf-invariants");
            config
        };
        Ok(Stores {
            orders: platform::db::connect(&named(orders)).await?,
            products: platform::db::connect(&named(products)).await?,
            redis: redis::Client::open(redis_url)?
                .get_multiplexed_async_connection()
                .await?,
            redis_prefix: redis_prefix.to_owned(),
        })
    }
}

/// What the check found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub products: usize,
    pub orders: i64,
    pub pending: i64,
    pub confirmed: i64,
    pub rejected: i64,
    /// Every broken invariant, in words.
    pub violations: Vec<String>,
}

impl Report {
    pub fn holds(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Order counts by status.
pub async fn order_counts(orders: &Client) -> anyhow::Result<(i64, i64, i64)> {
    let row = orders
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'PENDING'), count(*) FILTER (WHERE status = 'CONFIRMED'), \
             count(*) FILTER (WHERE status = 'REJECTED') FROM orders",
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1), row.get(2)))
}

/// Whether an outbox has rows to send: the append-only outbox says so in
/// a view; the outbox before it marked rows published.
async fn pending_rows_sql(client: &tokio_postgres::Client) -> anyhow::Result<&'static str> {
    let append_only: bool = client
        .query_one(crate::fill::APPEND_ONLY_SQL, &[])
        .await?
        .get(0);
    Ok(if append_only {
        "SELECT EXISTS (SELECT 1 FROM outbox_pending)"
    } else {
        "SELECT EXISTS (SELECT 1 FROM outbox WHERE published_at IS NULL AND set_aside_at IS NULL)"
    })
}

/// Waits until no order is PENDING and both outboxes are empty, or
/// `timeout` passes; returns whether it drained and how long it took.
pub async fn wait_for_drain(
    stores: &Stores,
    timeout: Duration,
) -> anyhow::Result<(bool, Duration)> {
    let started = Instant::now();
    // Index probes only: the wait must not cost the databases much (a load
    // run reads their counters after it).
    let order_rows = pending_rows_sql(&stores.orders).await?;
    let product_rows = pending_rows_sql(&stores.products).await?;
    // Without an index on the status (the order service decides orders in
    // place), pending orders are past the re-drive's low-water mark or
    // were re-driven; a database from before that has the index.
    let low_water: bool = stores
        .orders
        .query_one(
            "SELECT to_regclass('order_redrive_cursor') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    let pending_orders = if low_water {
        "SELECT EXISTS (SELECT 1 FROM orders WHERE status = 'PENDING' \
             AND (id >= (SELECT low FROM order_redrive_cursor) OR redrive_at IS NOT NULL))"
    } else {
        "SELECT EXISTS (SELECT 1 FROM orders WHERE status = 'PENDING')"
    };
    loop {
        let pending: bool = stores.orders.query_one(pending_orders, &[]).await?.get(0);
        let order_outbox: bool = stores.orders.query_one(order_rows, &[]).await?.get(0);
        let product_outbox: bool = stores.products.query_one(product_rows, &[]).await?.get(0);
        if !pending && !order_outbox && !product_outbox {
            return Ok((true, started.elapsed()));
        }
        if started.elapsed() > timeout {
            return Ok((false, started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks every invariant for the products in `initial` (id → stock when
/// the run began).
pub async fn check(stores: &mut Stores, initial: &BTreeMap<i64, i64>) -> anyhow::Result<Report> {
    let mut report = Report {
        products: initial.len(),
        ..Report::default()
    };
    let (pending, confirmed, rejected) = order_counts(&stores.orders).await?;
    report.pending = pending;
    report.confirmed = confirmed;
    report.rejected = rejected;
    report.orders = pending + confirmed + rejected;
    if pending > 0 {
        report
            .violations
            .push(format!("{pending} orders are still PENDING"));
    }
    let ids: Vec<i64> = initial.keys().copied().collect();
    let confirmed_quantities = sum_by_product(
        &stores.orders,
        "SELECT i.product_id, sum(i.quantity)::int8 FROM order_items i JOIN orders o ON o.id = i.order_id \
         WHERE o.status = 'CONFIRMED' AND i.product_id = ANY($1) GROUP BY i.product_id",
        &ids,
    )
    .await?;
    let restocks = sum_by_product(
        &stores.products,
        "SELECT product_id, sum(delta)::int8 FROM stock_adjustments WHERE product_id = ANY($1) GROUP BY product_id",
        &ids,
    )
    .await?;
    let sql_stock = sum_by_product(
        &stores.products,
        "SELECT id, stock FROM products WHERE id = ANY($1)",
        &ids,
    )
    .await?;
    for (id, start) in initial {
        let expected =
            start + restocks.get(id).unwrap_or(&0) - confirmed_quantities.get(id).unwrap_or(&0);
        match sql_stock.get(id) {
            None => {}
            Some(stock) if *stock != expected => report.violations.push(format!(
                "product {id}: SQL stock {stock}, expected {expected} (initial {start} + restocks - confirmed)"
            )),
            Some(stock) if *stock < 0 => report.violations.push(format!("product {id}: negative stock {stock}")),
            Some(stock) => {
                let key = format!("{}stock:{{{id}}}", stores.redis_prefix);
                let counter: Option<i64> = redis::cmd("HGET").arg(&key).arg("stock").query_async(&mut stores.redis).await?;
                if counter != Some(*stock) {
                    report.violations.push(format!("product {id}: Redis stock {counter:?}, SQL stock {stock}"));
                }
            }
        }
    }
    report.violations.extend(compare_verdicts(stores).await?);
    report
        .violations
        .extend(replicas_behind(stores, &ids, REPLICA_PATIENCE).await?);
    Ok(report)
}

/// How long a replica may take to catch up once the outboxes are empty:
/// its last events may still be in the order service's consumer.
const REPLICA_PATIENCE: Duration = Duration::from_secs(5);

/// Products whose copy in the order service's replica is not the product
/// (another name or price, or deleted on one side only) after `patience`.
pub async fn replicas_behind(
    stores: &Stores,
    ids: &[i64],
    patience: Duration,
) -> anyhow::Result<Vec<String>> {
    let started = Instant::now();
    loop {
        let products: HashMap<i64, (String, i64)> = stores
            .products
            .query(
                "SELECT id, name, price FROM products WHERE id = ANY($1)",
                &[&ids],
            )
            .await?
            .iter()
            .map(|row| (row.get(0), (row.get(1), row.get(2))))
            .collect();
        let replicas: HashMap<i64, (String, i64, bool)> = stores
            .orders
            .query(
                "SELECT id, name, price, deleted FROM product_replica WHERE id = ANY($1)",
                &[&ids],
            )
            .await?
            .iter()
            .map(|row| (row.get(0), (row.get(1), row.get(2), row.get(3))))
            .collect();
        let behind: Vec<String> = ids
            .iter()
            .filter_map(|id| match (products.get(id), replicas.get(id)) {
                (Some((name, price)), Some((copy_name, copy_price, false)))
                    if copy_name == name && copy_price == price =>
                {
                    None
                }
                (None, None | Some((_, _, true))) => None,
                (product, replica) => Some(format!(
                    "product {id}: the order service's replica is behind it ({replica:?} for {product:?})"
                )),
            })
            .collect();
        if behind.is_empty() || started.elapsed() > patience {
            return Ok(behind);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn sum_by_product(
    client: &Client,
    sql: &str,
    ids: &[i64],
) -> anyhow::Result<HashMap<i64, i64>> {
    let rows = client.query(sql, &[&ids]).await?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// The product service's verdicts and the order service's statuses agree,
/// order by order.
async fn compare_verdicts(stores: &Stores) -> anyhow::Result<Vec<String>> {
    let decided: HashMap<Uuid, String> = stores
        .orders
        .query(
            "SELECT id, status FROM orders WHERE status <> 'PENDING'",
            &[],
        )
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let verdicts: HashMap<Uuid, String> = stores
        .products
        .query("SELECT order_id, status FROM reservations", &[])
        .await?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    let mut violations = Vec::new();
    for (order, status) in &decided {
        let expected = if status == "CONFIRMED" {
            "reserved"
        } else {
            "rejected"
        };
        match verdicts.get(order) {
            Some(verdict) if verdict == expected => {}
            other => violations.push(format!(
                "order {order} is {status} but the product service says {other:?}"
            )),
        }
    }
    if violations.len() > 20 {
        let more = violations.len() - 20;
        violations.truncate(20);
        violations.push(format!("… and {more} more disagreements"));
    }
    Ok(violations)
}

/// Dead letters of the pipeline, wherever they wait: in each service's
/// `dead_letters` table (`databases`: a name and its database each), and
/// in the broker's dead-letter queues, not drained yet.
pub async fn dead_letters(
    amqp_url: &str,
    namespace: &str,
    databases: &[(&str, tokio_postgres::Config)],
) -> anyhow::Result<Vec<(String, u64)>> {
    let mut counts = Vec::new();
    for (name, database) in databases {
        let client = platform::db::connect(database).await?;
        for (queue, waiting) in outbox::dead_letters::waiting(&client).await? {
            counts.push((format!("{name}: {queue}"), waiting as u64));
        }
    }
    let connection = outbox::broker::connect(amqp_url, "perf dead-letter count").await?;
    let topology = outbox::topology::Topology::new(namespace, outbox::topology::QueueType::Quorum);
    for (queue, waiting) in topology.dead_letter_counts(&connection).await? {
        counts.push((format!("broker: {queue}"), u64::from(waiting)));
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(counts)
}
