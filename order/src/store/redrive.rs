//! Re-driving orders left PENDING: an order whose `order.created` or whose
//! reply was lost (set aside, dead-lettered, a reply that never came) would
//! wait for an operator forever. A sweeper sends such an order's
//! `order.created` again, under its own message id (the order's id): the
//! product service applies it at most once, and answers an order it has
//! already decided with the verdict it recorded.
//!
//! Each order is re-driven with backoff: first `after` its placing, then
//! after 2×, 4×, 8× `after` (capped there), so a pipeline that is only
//! slow is not flooded with copies. The sweeper reads pending orders in
//! id order, a bounded page per step, from a cursor that wraps around:
//! every pending order is reached, and no step reads more than a page.
//! Several order instances may sweep at once: a due order is claimed with
//! `FOR UPDATE SKIP LOCKED` and its next due time moves forward in the
//! same transaction.

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

/// Pending orders placed before `$2` (a UUIDv7 floor), after the cursor
/// `$1`, in id order (`orders_by_status` serves it).
static PAGE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT id FROM orders WHERE status = '{}' AND id > $1 AND id < $2 ORDER BY id LIMIT $3",
        OrderStatus::Pending.as_str()
    )
});

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
    /// Pending orders read per step.
    pub page: i64,
}

/// What one step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Pending orders old enough that the step read.
    pub read: usize,
    /// Of those, the ones due and claimed now.
    pub redriven: usize,
    /// Of those, the ones whose `order.created` goes out again (the rest
    /// were still waiting for the relay).
    pub resent: u64,
}

/// The sweeper of one order service.
pub struct Redriver {
    pool: Pool,
    config: RedriveConfig,
    redriven: IntCounter,
    /// The last order id read; the next page starts after it.
    cursor: Uuid,
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
            cursor: Uuid::nil(),
        })
    }

    /// One step: the next page of orders pending for longer than `after`;
    /// sends again the `order.created` of those due.
    pub async fn sweep_once(&mut self) -> StoreResult<SweepReport> {
        let cutoff = uuid_v7_floor(SystemTime::now() - self.config.after);
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let page: Vec<Uuid> = tx
            .query(
                PAGE_SQL.as_str(),
                &[&self.cursor, &cutoff, &self.config.page],
            )
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?;
        self.cursor = match page.last() {
            Some(last) if page.len() as i64 == self.config.page => *last,
            // The end of the pending orders: start over next time.
            _ => Uuid::nil(),
        };
        let mut report = SweepReport {
            read: page.len(),
            ..SweepReport::default()
        };
        if page.is_empty() {
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
        tx.commit().await?;
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
                    report.read as i64 == self.config.page
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
