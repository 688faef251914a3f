//! The stock side of the order loop: `order.created` in, a reservation
//! (all items or none) and `stock.reserved` / `stock.rejected` out.
//!
//! Per batch, in the consumer's one transaction: lock every product the
//! batch names (in id order), read the verdicts already recorded for its
//! orders (read after the locks: a consumer deciding the same order
//! elsewhere has committed by then), decide each order not decided yet in
//! arrival order against the locked stock, then in one statement
//! decrement with a conditional UPDATE, record the verdicts and append the
//! replies to the outbox. The reservation row, keyed by order id, is the
//! record that the event applied (no separate inbox row): an order decided
//! before (a redelivery, a replay, a re-drive by the order service) is
//! answered with its recorded verdict again and changes nothing, so a
//! reply that was lost is sent again and the order cannot stay PENDING.
//! After the commit the Redis counters take the committed values through
//! the versioned script.

use std::collections::{BTreeMap, BTreeSet};

use deadpool_postgres::Transaction;
use outbox::consumer::{ApplyError, Batch, Dedupe, Handler};
use outbox::envelope::Envelope;
use outbox::events::{ORDER_CREATED, OrderCreated, RejectReason, Verdict};
use prometheus::{IntCounterVec, Opts, Registry};

use crate::cache::{ProductCache, StockUpdate};
use crate::store::{self, LockedStock, Reservation};

/// Reservations by result, for `/metrics`.
#[derive(Clone)]
pub struct ReservationMetrics {
    pub verdicts: IntCounterVec,
}

impl ReservationMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let verdicts = IntCounterVec::new(
            Opts::new(
                "stock_reservations_total",
                "Orders decided by the stock loop, by result and reason",
            ),
            &["result"],
        )?;
        registry.register(Box::new(verdicts.clone()))?;
        Ok(ReservationMetrics { verdicts })
    }
}

/// Applies `order.created` events.
pub struct ReservationHandler {
    cache: ProductCache,
    metrics: ReservationMetrics,
}

impl ReservationHandler {
    pub fn new(cache: ProductCache, metrics: ReservationMetrics) -> Self {
        ReservationHandler { cache, metrics }
    }
}

/// Decides one order against the stock left: all items or none.
pub fn decide(order: &OrderCreated, stock: &mut BTreeMap<i64, i64>) -> Verdict {
    for item in &order.items {
        let reason = match stock.get(&item.product_id) {
            None => RejectReason::UnknownProduct,
            Some(left) if *left < item.quantity => RejectReason::InsufficientStock,
            Some(_) => continue,
        };
        return Verdict::Rejected {
            reason,
            product_id: item.product_id,
        };
    }
    for item in &order.items {
        if let Some(left) = stock.get_mut(&item.product_id) {
            *left -= item.quantity;
        }
    }
    Verdict::Reserved
}

/// The label of `stock_reservations_total` for a verdict.
fn result_label(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Reserved => "reserved",
        Verdict::Rejected { reason, .. } => reason.as_str(),
    }
}

/// What a batch did: the counters to update after the commit, and how
/// many of its events named orders decided before.
pub struct Reserved {
    pub updates: Vec<StockUpdate>,
    pub decided_before: usize,
}

impl Handler for ReservationHandler {
    type Event = OrderCreated;
    type Outcome = Reserved;
    /// The reservation, keyed by order id, records that the event applied.
    const DEDUPE: Dedupe = Dedupe::Effect;

    fn applied_before(outcome: &Reserved) -> usize {
        outcome.decided_before
    }

    fn decode(&self, envelope: &Envelope) -> Result<OrderCreated, String> {
        if envelope.event_type != ORDER_CREATED {
            return Err(format!(
                "unexpected event type {:?} on the order.created queue",
                envelope.event_type
            ));
        }
        let order: OrderCreated = envelope
            .payload_as()
            .map_err(|error| format!("not an order.created payload: {error}"))?;
        order.validate()?;
        Ok(order)
    }

    async fn apply<'a>(
        &'a self,
        tx: &'a Transaction<'_>,
        batch: &'a Batch<'_, OrderCreated>,
    ) -> Result<Reserved, ApplyError> {
        // Products of duplicates too: their counters get the committed
        // values again, in case a crash cut the first after-commit short.
        let ids: BTreeSet<i64> = batch
            .fresh
            .iter()
            .chain(&batch.duplicates)
            .flat_map(|inbound| inbound.event.items.iter().map(|item| item.product_id))
            .collect();
        let ids: Vec<i64> = ids.into_iter().collect();
        let locked = store::lock_products(tx, &ids).await?;
        let orders: Vec<_> = batch
            .fresh
            .iter()
            .chain(&batch.duplicates)
            .map(|inbound| inbound.event.order_id)
            .collect();
        // Verdicts recorded before, then those decided in this batch: an
        // order is decided once, however many events name it.
        let mut verdicts = store::recorded_verdicts(tx, &orders).await?;
        let mut left: BTreeMap<i64, i64> = locked.iter().map(|row| (row.id, row.stock)).collect();
        let mut decided = Vec::with_capacity(batch.fresh.len());
        let mut replies = Vec::with_capacity(orders.len());
        for inbound in &batch.fresh {
            let order_id = inbound.event.order_id;
            let verdict = *verdicts.entry(order_id).or_insert_with(|| {
                let verdict = decide(&inbound.event, &mut left);
                decided.push(Reservation {
                    order_id,
                    message_id: inbound.envelope.id,
                    verdict,
                    items: &inbound.event.items,
                });
                verdict
            });
            replies.push(verdict.reply(order_id)?);
        }
        for inbound in &batch.duplicates {
            let order_id = inbound.event.order_id;
            if let Some(verdict) = verdicts.get(&order_id) {
                replies.push(verdict.reply(order_id)?);
            }
        }
        let decrements: Vec<(i64, i64)> = locked
            .iter()
            .filter_map(|row| {
                let taken = row.stock - left[&row.id];
                (taken > 0).then_some((row.id, taken))
            })
            .collect();
        let changed = store::reserve(tx, &decrements, &decided, &replies).await?;
        for reservation in &decided {
            self.metrics
                .verdicts
                .with_label_values(&[result_label(reservation.verdict)])
                .inc();
        }
        Ok(Reserved {
            updates: counter_updates(&locked, &changed, &decrements),
            decided_before: batch.fresh.len() + batch.duplicates.len() - decided.len(),
        })
    }

    async fn after_commit(&self, reserved: Reserved) {
        // The batch's replies are committed: this process's relay need not
        // wait for its poll.
        outbox::relay::rows_committed();
        self.cache
            .best_effort("stock_sync", self.cache.sync_stock(&reserved.updates))
            .await;
    }
}

/// The committed state of every locked product: decremented ones with their
/// decrement, the others as they were (which seeds or confirms a counter).
fn counter_updates(
    locked: &[LockedStock],
    changed: &[LockedStock],
    decrements: &[(i64, i64)],
) -> Vec<StockUpdate> {
    locked
        .iter()
        .map(|row| {
            let after = changed.iter().find(|c| c.id == row.id).unwrap_or(row);
            let decrement = decrements
                .iter()
                .find(|(id, _)| *id == row.id)
                .map_or(0, |(_, q)| *q);
            StockUpdate {
                id: row.id,
                decrement,
                stock: after.stock,
                version: after.version,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use outbox::events::OrderItem;
    use uuid::Uuid;

    fn order(items: &[(i64, i64)]) -> OrderCreated {
        OrderCreated {
            order_id: Uuid::now_v7(),
            items: items
                .iter()
                .map(|&(product_id, quantity)| OrderItem {
                    product_id,
                    quantity,
                })
                .collect(),
        }
    }

    #[test]
    fn an_order_takes_all_its_items_or_nothing() {
        let mut stock = BTreeMap::from([(1, 5), (2, 1)]);
        assert_eq!(
            decide(&order(&[(1, 2), (2, 2)]), &mut stock),
            Verdict::Rejected {
                reason: RejectReason::InsufficientStock,
                product_id: 2
            }
        );
        assert_eq!(
            stock,
            BTreeMap::from([(1, 5), (2, 1)]),
            "a rejected order changed stock"
        );
        assert_eq!(
            decide(&order(&[(1, 2), (2, 1)]), &mut stock),
            Verdict::Reserved
        );
        assert_eq!(stock, BTreeMap::from([(1, 3), (2, 0)]));
    }

    #[test]
    fn unknown_products_reject_the_order() {
        let mut stock = BTreeMap::from([(1, 5)]);
        assert_eq!(
            decide(&order(&[(1, 1), (9, 1)]), &mut stock),
            Verdict::Rejected {
                reason: RejectReason::UnknownProduct,
                product_id: 9
            }
        );
        assert_eq!(stock[&1], 5);
    }

    #[test]
    fn orders_are_decided_in_arrival_order() {
        let mut stock = BTreeMap::from([(1, 2)]);
        let results: Vec<bool> = (0..4)
            .map(|_| decide(&order(&[(1, 1)]), &mut stock) == Verdict::Reserved)
            .collect();
        assert_eq!(results, [true, true, false, false]);
    }

    #[test]
    fn counters_get_the_committed_values() {
        let locked = [
            LockedStock {
                id: 1,
                stock: 5,
                version: 3,
            },
            LockedStock {
                id: 2,
                stock: 7,
                version: 9,
            },
        ];
        let changed = [LockedStock {
            id: 1,
            stock: 2,
            version: 4,
        }];
        let updates = counter_updates(&locked, &changed, &[(1, 3)]);
        assert_eq!(
            updates,
            [
                StockUpdate {
                    id: 1,
                    decrement: 3,
                    stock: 2,
                    version: 4
                },
                StockUpdate {
                    id: 2,
                    decrement: 0,
                    stock: 7,
                    version: 9
                },
            ]
        );
    }
}
