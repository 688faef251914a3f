//! Validated order requests, and orders as they are answered.

use std::collections::BTreeSet;

use http_api::auth::{Caller, Scope};
use http_api::json::{InputError, JsonObject};
use outbox::events::{MAX_ITEMS, MAX_QUANTITY, Verdict};
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

/// One line of an order request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ItemRequest {
    pub product_id: i64,
    pub quantity: i64,
}

/// A valid order request: 1 to 100 items, quantities 1 to 10,000, no
/// product twice. Items are kept sorted by product id, so two bodies that
/// list the same items in another order are the same request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    items: Vec<ItemRequest>,
}

impl NewOrder {
    /// `{"product_id": N, "quantity": Q}` or `{"items": [{…}, …]}`.
    pub fn parse(body: &[u8]) -> Result<Self, InputError> {
        let object = JsonObject::parse(body, &["product_id", "quantity", "items"])?;
        let items = if object.has("items") {
            if object.has("product_id") || object.has("quantity") {
                return Err(InputError::invalid(
                    "ambiguous_order",
                    "give either items or product_id and quantity, not both",
                ));
            }
            let lines = object.required_objects("items", &["product_id", "quantity"])?;
            lines.iter().map(item).collect::<Result<Vec<_>, _>>()?
        } else {
            vec![item(&object)?]
        };
        Self::new(items)
    }

    pub fn new(mut items: Vec<ItemRequest>) -> Result<Self, InputError> {
        if items.is_empty() || items.len() > MAX_ITEMS {
            return Err(InputError::invalid(
                "invalid_items",
                format!("an order has 1 to {MAX_ITEMS} items, not {}", items.len()),
            ));
        }
        let distinct: BTreeSet<i64> = items.iter().map(|item| item.product_id).collect();
        if distinct.len() != items.len() {
            return Err(InputError::invalid(
                "duplicate_product",
                "each product may appear once in an order",
            ));
        }
        items.sort();
        Ok(NewOrder { items })
    }

    pub fn items(&self) -> &[ItemRequest] {
        &self.items
    }

    pub fn product_ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.items.iter().map(|item| item.product_id)
    }

    /// The request in canonical form (`3x2,7x1`): equal for equal requests.
    pub fn fingerprint(&self) -> String {
        self.items
            .iter()
            .map(|item| format!("{}x{}", item.product_id, item.quantity))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn item(object: &JsonObject) -> Result<ItemRequest, InputError> {
    let product_id = object
        .required_i64("product_id")
        .map_err(InputError::out_of_range_as("invalid_product_id"))?;
    let quantity = object
        .required_i64("quantity")
        .map_err(InputError::out_of_range_as("invalid_quantity"))?;
    if product_id <= 0 {
        return Err(InputError::invalid(
            "invalid_product_id",
            "product_id is a positive integer",
        ));
    }
    if !(1..=MAX_QUANTITY).contains(&quantity) {
        return Err(InputError::invalid(
            "invalid_quantity",
            format!("quantity is from 1 to {MAX_QUANTITY}"),
        ));
    }
    Ok(ItemRequest {
        product_id,
        quantity,
    })
}

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Rejected,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Confirmed => "CONFIRMED",
            OrderStatus::Rejected => "REJECTED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_uppercase().as_str() {
            "PENDING" => Some(OrderStatus::Pending),
            "CONFIRMED" => Some(OrderStatus::Confirmed),
            "REJECTED" => Some(OrderStatus::Rejected),
            _ => None,
        }
    }

    /// The status a stock verdict decides.
    pub fn of(verdict: Verdict) -> Self {
        match verdict {
            Verdict::Reserved => OrderStatus::Confirmed,
            Verdict::Rejected { .. } => OrderStatus::Rejected,
        }
    }
}

/// Who an order belongs to: the issuer and subject of the token that
/// placed it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    pub issuer: String,
    pub subject: String,
}

impl Owner {
    /// The owner of orders placed in unit tests of the writer.
    #[doc(hidden)]
    pub fn for_tests() -> Owner {
        Owner::of(&Caller::checks_off())
    }

    pub fn of(caller: &Caller) -> Owner {
        Owner {
            issuer: caller.issuer.clone(),
            subject: caller.subject.clone(),
        }
    }
}

/// Whose orders a caller reads: its own, or every one (support staff,
/// with `orders.read_all`; ownerless orders placed before owners existed
/// included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readable {
    Own(Owner),
    All,
}

impl Readable {
    pub fn by(caller: &Caller) -> Readable {
        if caller.scopes.has(Scope::OrdersReadAll) {
            Readable::All
        } else {
            Readable::Own(Owner::of(caller))
        }
    }
}

/// A priced order line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OrderLine {
    pub product_id: i64,
    pub quantity: i64,
    /// Price of one unit in cents when the order was placed.
    pub unit_price: i64,
}

/// An order as answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Order {
    pub id: Uuid,
    pub status: OrderStatus,
    /// Why it was rejected: `insufficient_stock` or `unknown_product`.
    pub reason: Option<String>,
    pub items: Vec<OrderLine>,
    /// Sum of quantity × unit price, in cents.
    pub total: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub decided_at: Option<OffsetDateTime>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_api::HttpError;

    #[test]
    fn both_shapes_parse_to_the_same_request() {
        let single = NewOrder::parse(br#"{"product_id": 3, "quantity": 2}"#).unwrap();
        let listed = NewOrder::parse(br#"{"items": [{"product_id": 3, "quantity": 2}]}"#).unwrap();
        assert_eq!(single, listed);
        assert_eq!(single.fingerprint(), "3x2");
    }

    #[test]
    fn item_order_does_not_change_the_request() {
        let one = NewOrder::parse(
            br#"{"items": [{"product_id": 7, "quantity": 1}, {"product_id": 3, "quantity": 2}]}"#,
        )
        .unwrap();
        let two = NewOrder::parse(
            br#"{"items": [{"product_id": 3, "quantity": 2}, {"product_id": 7, "quantity": 1}]}"#,
        )
        .unwrap();
        assert_eq!(one.fingerprint(), two.fingerprint());
    }

    #[test]
    fn every_rule_is_enforced() {
        let parse = |body: &str| NewOrder::parse(body.as_bytes()).map_err(|error| error.code());
        assert_eq!(
            parse(r#"{"product_id": 1, "quantity": 0}"#).unwrap_err(),
            "invalid_quantity"
        );
        assert_eq!(
            parse(r#"{"product_id": 1, "quantity": 10001}"#).unwrap_err(),
            "invalid_quantity"
        );
        assert_eq!(
            parse(r#"{"product_id": 1, "quantity": -1}"#).unwrap_err(),
            "invalid_quantity"
        );
        assert_eq!(
            parse(r#"{"product_id": 0, "quantity": 1}"#).unwrap_err(),
            "invalid_product_id"
        );
        assert_eq!(
            parse(r#"{"product_id": 1, "quantity": 1e40}"#).unwrap_err(),
            "invalid_quantity"
        );
        assert_eq!(parse(r#"{"items": []}"#).unwrap_err(), "invalid_items");
        assert_eq!(
            parse(
                r#"{"items": [{"product_id": 1, "quantity": 1}, {"product_id": 1, "quantity": 2}]}"#
            )
            .unwrap_err(),
            "duplicate_product"
        );
        assert_eq!(
            parse(r#"{"items": [{"product_id": 1, "quantity": 1}], "product_id": 2}"#).unwrap_err(),
            "ambiguous_order"
        );
        assert_eq!(
            parse(r#"{"product_id": "1", "quantity": 1}"#).unwrap_err(),
            "malformed_body"
        );
        assert_eq!(
            parse(r#"{"items": {"product_id": 1}}"#).unwrap_err(),
            "malformed_body"
        );
        assert_eq!(parse(r#"{"quantity": 1}"#).unwrap_err(), "invalid_value");
        let many: Vec<String> = (1..=101)
            .map(|id| format!(r#"{{"product_id": {id}, "quantity": 1}}"#))
            .collect();
        assert_eq!(
            parse(&format!(r#"{{"items": [{}]}}"#, many.join(","))).unwrap_err(),
            "invalid_items"
        );
    }
}
