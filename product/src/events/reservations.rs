//! The stock side of the order loop: `order.created` in, a reservation
//! (all items or none) and `stock.reserved` / `stock.rejected` out.
//!
//! Per batch, in the consumer's one transaction: lock every product the
//! batch names (in id order), decide each new order in arrival order
//! against the locked stock, decrement with a conditional UPDATE, record
//! the verdicts and append the replies to the outbox. After the commit the
//! Redis counters take the committed values through the versioned script.

use std::collections::{BTreeMap, BTreeSet};

use deadpool_postgres::Transaction;
use outbox::consumer::{ApplyError, Batch, Handler, Inbound};
use outbox::envelope::Envelope;
use outbox::events::{
    ORDER_CREATED, OrderCreated, RejectReason, STOCK_REJECTED, STOCK_RESERVED, StockRejected,
    StockReserved,
};
use outbox::writer::{self, NewEvent};
use prometheus::{IntCounterVec, Opts, Registry};

use crate::cache::{ProductCache, StockUpdate};
use crate::store::{self, LockedStock, StoreError, Verdict};

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
pub fn decide(
    order: &OrderCreated,
    stock: &mut BTreeMap<i64, i64>,
) -> Result<(), (RejectReason, i64)> {
    for item in &order.items {
        match stock.get(&item.product_id) {
            None => return Err((RejectReason::UnknownProduct, item.product_id)),
            Some(left) if *left < item.quantity => {
                return Err((RejectReason::InsufficientStock, item.product_id));
            }
            Some(_) => {}
        }
    }
    for item in &order.items {
        if let Some(left) = stock.get_mut(&item.product_id) {
            *left -= item.quantity;
        }
    }
    Ok(())
}

fn reply(
    inbound: &Inbound<OrderCreated>,
    decided: &Result<(), (RejectReason, i64)>,
) -> Result<NewEvent, outbox::Error> {
    let order_id = inbound.event.order_id;
    match decided {
        Ok(()) => NewEvent::new(order_id, STOCK_RESERVED, &StockReserved { order_id }),
        Err((reason, product_id)) => NewEvent::new(
            order_id,
            STOCK_REJECTED,
            &StockRejected {
                order_id,
                reason: *reason,
                product_id: *product_id,
            },
        ),
    }
}

impl From<StoreError> for ApplyError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Outbox(error) => ApplyError::Failed(error),
            StoreError::Database(error) => ApplyError::Failed(error.into()),
            StoreError::Unavailable(message) | StoreError::Cache(message) => {
                ApplyError::Failed(outbox::Error::Unavailable(message))
            }
            StoreError::Constraint(name) => ApplyError::Failed(outbox::Error::Invalid(format!(
                "constraint {name} refused the batch"
            ))),
        }
    }
}

impl Handler for ReservationHandler {
    type Event = OrderCreated;
    /// The counters to update after the commit.
    type Outcome = Vec<StockUpdate>;

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
    ) -> Result<Vec<StockUpdate>, ApplyError> {
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
        let mut left: BTreeMap<i64, i64> = locked.iter().map(|row| (row.id, row.stock)).collect();
        let mut verdicts = Vec::with_capacity(batch.fresh.len());
        let mut replies = Vec::with_capacity(batch.fresh.len());
        for inbound in &batch.fresh {
            let decided = decide(&inbound.event, &mut left);
            replies.push(reply(inbound, &decided)?);
            verdicts.push(Verdict {
                order_id: inbound.event.order_id,
                message_id: inbound.envelope.id,
                reserved: decided.is_ok(),
                reason: decided.err().map(|(reason, _)| reason.as_str()),
                items: serde_json::to_value(&inbound.event.items).unwrap_or_default(),
            });
        }
        let decrements: Vec<(i64, i64)> = locked
            .iter()
            .filter_map(|row| {
                let taken = row.stock - left[&row.id];
                (taken > 0).then_some((row.id, taken))
            })
            .collect();
        let changed = store::decrement(tx, &decrements).await?;
        store::record_verdicts(tx, &verdicts).await?;
        writer::append(tx, &replies).await?;
        for verdict in &verdicts {
            let result = if verdict.reserved {
                "reserved"
            } else {
                verdict.reason.unwrap_or("rejected")
            };
            self.metrics.verdicts.with_label_values(&[result]).inc();
        }
        Ok(counter_updates(&locked, &changed, &decrements))
    }

    async fn after_commit(&self, updates: Vec<StockUpdate>) {
        self.cache
            .best_effort("stock_sync", self.cache.sync_stock(&updates))
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
            Err((RejectReason::InsufficientStock, 2))
        );
        assert_eq!(
            stock,
            BTreeMap::from([(1, 5), (2, 1)]),
            "a rejected order changed stock"
        );
        assert_eq!(decide(&order(&[(1, 2), (2, 1)]), &mut stock), Ok(()));
        assert_eq!(stock, BTreeMap::from([(1, 3), (2, 0)]));
    }

    #[test]
    fn unknown_products_reject_the_order() {
        let mut stock = BTreeMap::from([(1, 5)]);
        assert_eq!(
            decide(&order(&[(1, 1), (9, 1)]), &mut stock),
            Err((RejectReason::UnknownProduct, 9))
        );
        assert_eq!(stock[&1], 5);
    }

    #[test]
    fn orders_are_decided_in_arrival_order() {
        let mut stock = BTreeMap::from([(1, 2)]);
        let results: Vec<bool> = (0..4)
            .map(|_| decide(&order(&[(1, 1)]), &mut stock).is_ok())
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
