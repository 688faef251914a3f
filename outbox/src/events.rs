//! The pipeline's events: their names (also the routing keys) and payloads.
//! The order and product services exchange exactly these; a change here is
//! a change of the contract in docs/ARCHITECTURE.md.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::Envelope;
use crate::writer::NewEvent;

/// An order was accepted and waits for stock (orders → product).
pub const ORDER_CREATED: &str = "order.created";
/// Stock for every item of an order was reserved (products → order).
pub const STOCK_RESERVED: &str = "stock.reserved";
/// An order could not be served (products → order).
pub const STOCK_REJECTED: &str = "stock.rejected";
/// A product was created or changed (products → order's replica).
pub const PRODUCT_UPSERTED: &str = "product.upserted";
/// A product was deleted (products → order's replica).
pub const PRODUCT_DELETED: &str = "product.deleted";

/// Most items in one order.
pub const MAX_ITEMS: usize = 100;
/// Largest quantity of one item.
pub const MAX_QUANTITY: i64 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderItem {
    pub product_id: i64,
    pub quantity: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCreated {
    pub order_id: Uuid,
    pub items: Vec<OrderItem>,
}

impl OrderCreated {
    /// The rules every order obeys; a message breaking them can never apply.
    pub fn validate(&self) -> Result<(), String> {
        if self.items.is_empty() || self.items.len() > MAX_ITEMS {
            return Err(format!(
                "an order has 1 to {MAX_ITEMS} items, not {}",
                self.items.len()
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for item in &self.items {
            if !(1..=MAX_QUANTITY).contains(&item.quantity) {
                return Err(format!(
                    "quantity {} is outside 1 to {MAX_QUANTITY}",
                    item.quantity
                ));
            }
            if item.product_id <= 0 {
                return Err(format!(
                    "product id {} is not a product id",
                    item.product_id
                ));
            }
            if !seen.insert(item.product_id) {
                return Err(format!("product {} appears twice", item.product_id));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReserved {
    pub order_id: Uuid,
}

/// Why an order was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    InsufficientStock,
    UnknownProduct,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::InsufficientStock => "insufficient_stock",
            RejectReason::UnknownProduct => "unknown_product",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "insufficient_stock" => Some(RejectReason::InsufficientStock),
            "unknown_product" => Some(RejectReason::UnknownProduct),
            _ => None,
        }
    }
}

/// What the stock loop decided for an order: made by the product service,
/// recorded there, sent as `stock.reserved` / `stock.rejected`, and read
/// back by the order service. One type from the decision to the column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every item's stock was taken.
    Reserved,
    /// Nothing was taken: `product_id` is the first product that could
    /// not be served.
    Rejected {
        reason: RejectReason,
        product_id: i64,
    },
}

impl Verdict {
    /// The reply event that carries it.
    pub fn reply(self, order_id: Uuid) -> crate::Result<NewEvent> {
        match self {
            Verdict::Reserved => {
                NewEvent::new(order_id, STOCK_RESERVED, &StockReserved { order_id })
            }
            Verdict::Rejected { reason, product_id } => NewEvent::new(
                order_id,
                STOCK_REJECTED,
                &StockRejected {
                    order_id,
                    reason,
                    product_id,
                },
            ),
        }
    }

    /// The order and verdict a reply envelope carries; `Err` says why it
    /// is not one.
    pub fn of_reply(envelope: &Envelope) -> Result<(Uuid, Verdict), String> {
        let bad =
            |error: serde_json::Error| format!("not a {} payload: {error}", envelope.event_type);
        match envelope.event_type.as_str() {
            STOCK_RESERVED => {
                let reply: StockReserved = envelope.payload_as().map_err(bad)?;
                Ok((reply.order_id, Verdict::Reserved))
            }
            STOCK_REJECTED => {
                let reply: StockRejected = envelope.payload_as().map_err(bad)?;
                Ok((
                    reply.order_id,
                    Verdict::Rejected {
                        reason: reply.reason,
                        product_id: reply.product_id,
                    },
                ))
            }
            other => Err(format!("unexpected event type {other:?} for a stock reply")),
        }
    }

    /// Why it was rejected, if it was.
    pub fn reason(self) -> Option<RejectReason> {
        match self {
            Verdict::Reserved => None,
            Verdict::Rejected { reason, .. } => Some(reason),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockRejected {
    pub order_id: Uuid,
    pub reason: RejectReason,
    /// The first product that could not be served.
    pub product_id: i64,
}

/// The fields the order service keeps of a product. `version` grows with
/// every write, so a replica never lets an older event overwrite a newer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductUpserted {
    pub product_id: i64,
    pub name: String,
    pub price: i64,
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductDeleted {
    pub product_id: i64,
    pub version: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn orders_break_the_rules_in_every_way_a_message_could() {
        assert!(order(&[(1, 1), (2, 10_000)]).validate().is_ok());
        assert!(order(&[]).validate().is_err());
        assert!(order(&[(1, 0)]).validate().is_err());
        assert!(order(&[(1, 10_001)]).validate().is_err());
        assert!(order(&[(1, 1), (1, 2)]).validate().is_err());
        assert!(order(&[(-4, 1)]).validate().is_err());
        let many: Vec<(i64, i64)> = (1..=101).map(|id| (id, 1)).collect();
        assert!(order(&many).validate().is_err());
    }

    #[test]
    fn a_verdict_travels_as_its_reply_and_comes_back_the_same() {
        let order_id = Uuid::now_v7();
        for verdict in [
            Verdict::Reserved,
            Verdict::Rejected {
                reason: RejectReason::UnknownProduct,
                product_id: 9,
            },
        ] {
            let event = verdict.reply(order_id).unwrap();
            let envelope = Envelope {
                id: event.id,
                event_type: event.event_type.into(),
                aggregate_id: event.aggregate_id,
                occurred_at: time::OffsetDateTime::now_utc(),
                payload: serde_json::value::RawValue::from_string(event.payload).unwrap(),
            };
            assert_eq!(Verdict::of_reply(&envelope), Ok((order_id, verdict)));
        }
        for reason in [
            RejectReason::InsufficientStock,
            RejectReason::UnknownProduct,
        ] {
            assert_eq!(RejectReason::parse(reason.as_str()), Some(reason));
        }
    }

    #[test]
    fn reasons_travel_in_snake_case() {
        let rejected = StockRejected {
            order_id: Uuid::nil(),
            reason: RejectReason::InsufficientStock,
            product_id: 3,
        };
        let text = serde_json::to_string(&rejected).unwrap();
        assert!(text.contains(r#""reason":"insufficient_stock""#), "{text}");
    }
}
