//! Re-driving orders left PENDING: an order whose `order.created` or whose
//! reply was lost (set aside, dead-lettered, a reply that never came) would
//! wait for an operator forever. A sweeper sends such an order's
//! `order.created` again, under its own message id (the order's id): the
//! product service applies it at most once, and answers an order it has
//! already decided with the verdict it recorded.
//!
//! Each order is re-driven with backoff: first `after` its placing, then
//! after 2×, 4×, 8× `after` (capped there), so a pipeline that is only
//! slow is not flooded with copies.
//!
//! No index on the status finds pending orders (it would make every
//! decision a non-HOT update). Instead, a low-water mark is kept
//! (`order_redrive_cursor`): every order before it is decided or has been
//! re-driven once. A step reads the orders after it by primary key, a
//! bounded page, up to those old enough both to be due and to have
//! committed if they ever will (a request waits for its commit at most
//! `settled`); it re-drives the pending ones and moves the mark past the
//! page. An order re-driven once has its next due time in `redrive_at`,
//! which a partial index finds again. Several order instances may sweep at
//! once: a due order is claimed with `FOR UPDATE SKIP LOCKED` and its next
//! due time moves forward in the same transaction.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::Pool;
use outbox::events::OrderItem;
use outbox::writer;
use platform::shutdown::Signal;
use prometheus::{IntCounter, Registry};
use uuid::Uuid;

use super::StoreResult;
use crate::domain::OrderStatus;
use crate::store::writer::plan::created_event;

/// The orders from the low-water mark `$1` up to `$2` (a UUIDv7 floor),
/// a page of `$3` at most, by primary key, and whether each is pending.
static SCAN_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT id, status = '{}' FROM orders WHERE id >= $1 AND id < $2 ORDER BY id LIMIT $3",
        OrderStatus::Pending.as_str()
    )
});

/// Orders re-driven before that are due again (`orders_redriven`), `$1`
/// at most.
static DUE_AGAIN_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT id FROM orders WHERE redrive_at IS NOT NULL AND redrive_at <= now() \
             AND status = '{}' ORDER BY redrive_at LIMIT $1",
        OrderStatus::Pending.as_str()
    )
});

const LOW_WATER_SQL: &str = "SELECT low FROM order_redrive_cursor";

/// Moves the mark forward (another instance may have moved it further).
const MOVE_LOW_WATER_SQL: &str = "UPDATE order_redrive_cursor SET low = $1 WHERE low < $1";

/// Claims the due orders of a page and moves their next due time: 2, 4,
/// then 8 times `$2` seconds after this re-drive.
static CLAIM_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE orders SET redrives = redrives + 1, \
             redrive_at = now() + make_interval(secs => LEAST($2 * power(2, redrives + 1), $2 * 8)) \
         WHERE id IN ( \
             SELECT id FROM orders WHERE id = ANY($1) AND status = '{}' \
                 AND (redrive_at IS NULL OR redrive_at <= now()) \
             FOR UPDATE SKIP LOCKED) \
         RETURNING id",
        OrderStatus::Pending.as_str()
    )
});

const ITEMS_SQL: &str = "\
    SELECT order_id, product_id, quantity FROM order_items WHERE order_id = ANY($1) \
    ORDER BY order_id, product_id";

/// How the sweeper runs.
#[derive(Debug, Clone, Copy)]
pub struct RedriveConfig {
    /// An order PENDING this long is re-driven (`ORDER_REDRIVE_AFTER_SECS`).
    pub after: Duration,
    /// Orders read per step.
    pub page: i64,
    /// An order placed this long ago has committed, or never will (the
    /// longest a request waits for its commit, with room to spare).
    pub settled: Duration,
}

/// What one step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Orders read after the low-water mark (a full page: more follow).
    pub scanned: usize,
    /// Pending orders due that the step found.
    pub read: usize,
    /// Of those, the ones claimed now (another instance has the rest).
    pub redriven: usize,
    /// Their `order.created` events, appended again.
    pub resent: u64,
}

/// The sweeper of one order service.
pub struct Redriver {
    pool: Pool,
    config: RedriveConfig,
    redriven: IntCounter,
}

impl Redriver {
    pub fn new(pool: Pool, config: RedriveConfig, registry: &Registry) -> prometheus::Result<Self> {
        let redriven = IntCounter::new(
            "order_redriven_total",
            "Orders left PENDING whose order.created was sent again",
        )?;
        registry.register(Box::new(redriven.clone()))?;
        Ok(Redriver {
            pool,
            config,
            redriven,
        })
    }

    /// One step: the next page of orders after the low-water mark, and
    /// the orders re-driven before that are due again; sends again the
    /// `order.created` of the pending ones it claims.
    pub async fn sweep_once(&mut self) -> StoreResult<SweepReport> {
        let age = self.config.after.max(self.config.settled);
        let bound = uuid_v7_floor(SystemTime::now() - age);
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let low: Uuid = tx.query_one(LOW_WATER_SQL, &[]).await?.try_get(0)?;
        let scanned = if low < bound {
            tx.query(SCAN_SQL.as_str(), &[&low, &bound, &self.config.page])
                .await?
        } else {
            Vec::new()
        };
        let mut page: Vec<Uuid> = Vec::new();
        for row in &scanned {
            if row.try_get::<_, bool>(1)? {
                page.push(row.try_get(0)?);
            }
        }
        // Past the page: to its last order when it was full (more follow),
        // else to the bound. Pending orders in it are claimed below, or
        // by another instance, and are then found by `redrive_at`.
        let next_low = match scanned.last() {
            Some(last) if scanned.len() as i64 == self.config.page => last.try_get(0)?,
            _ => bound,
        };
        for row in tx
            .query(DUE_AGAIN_SQL.as_str(), &[&self.config.page])
            .await?
        {
            page.push(row.try_get(0)?);
        }
        let mut report = SweepReport {
            scanned: scanned.len(),
            read: page.len(),
            ..SweepReport::default()
        };
        if next_low > low {
            tx.execute(MOVE_LOW_WATER_SQL, &[&next_low]).await?;
        }
        if page.is_empty() {
            tx.commit().await?;
            return Ok(report);
        }
        let after = self.config.after.as_secs_f64();
        let due: Vec<Uuid> = tx
            .query(CLAIM_SQL.as_str(), &[&page, &after])
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?;
        report.redriven = due.len();
        if due.is_empty() {
            tx.commit().await?;
            return Ok(report);
        }
        let events = created_events(&tx, &due).await?;
        report.resent = writer::resend(&tx, &events).await?;
        writer::commit(tx).await?;
        self.redriven.inc_by(due.len() as u64);
        Ok(report)
    }

    /// Sweeps until `shutdown`: a full page is followed by the next at
    /// once, anything less by a pause of a quarter of `after`.
    pub async fn run(mut self, shutdown: Signal) {
        let pause =
            (self.config.after / 4).clamp(Duration::from_millis(250), Duration::from_secs(15));
        while !shutdown.is_cancelled() {
            let full = match self.sweep_once().await {
                Ok(report) => {
                    if report.redriven > 0 {
                        tracing::warn!(
                            redriven = report.redriven,
                            resent = report.resent,
                            pending_for_over = ?self.config.after,
                            "re-drove orders left PENDING: their order.created goes out again"
                        );
                    }
                    report.scanned as i64 == self.config.page
                }
                Err(error) => {
                    tracing::warn!(%error, "re-drive sweep failed; will retry");
                    false
                }
            };
            if !full {
                platform::shutdown::sleep(&shutdown, pause).await;
            }
        }
    }
}

/// The `order.created` of each order, rebuilt from its items.
async fn created_events(
    tx: &deadpool_postgres::Transaction<'_>,
    orders: &[Uuid],
) -> StoreResult<Vec<outbox::writer::NewEvent>> {
    let rows = tx.query(ITEMS_SQL, &[&orders]).await?;
    let mut items: Vec<(Uuid, Vec<OrderItem>)> = Vec::with_capacity(orders.len());
    for row in rows {
        let (order, product_id, quantity): (Uuid, i64, i32) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let item = OrderItem {
            product_id,
            quantity: i64::from(quantity),
        };
        match items.last_mut() {
            Some((last, lines)) if *last == order => lines.push(item),
            _ => items.push((order, vec![item])),
        }
    }
    Ok(items
        .iter()
        .map(|(order, lines)| created_event(*order, lines))
        .collect::<Result<_, _>>()?)
}

/// The smallest UUIDv7 of the millisecond `at`: every id made before `at`
/// sorts below it.
fn uuid_v7_floor(at: SystemTime) -> Uuid {
    let millis = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    bytes[6] = 0x70;
    bytes[8] = 0x80;
    Uuid::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_sorts_between_ids_made_before_and_after() {
        let before = Uuid::now_v7();
        std::thread::sleep(Duration::from_millis(2));
        let floor = uuid_v7_floor(SystemTime::now());
        std::thread::sleep(Duration::from_millis(2));
        let after = Uuid::now_v7();
        assert!(before < floor && floor < after, "{before} {floor} {after}");
        assert_eq!(floor.get_version_num(), 7);
    }
}
