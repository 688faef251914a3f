//! A batch laid out as one array per column for the placing statement,
//! and what it came to, decided from the replica's view of its products
//! (which the same statement returns).

use std::collections::{HashMap, HashSet};

use outbox::events::{ORDER_CREATED, OrderCreated, OrderItem};
use outbox::writer::{EventColumns, NewEvent};
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::PlaceError;
use crate::domain::{NewOrder, OrderLine, Owner};

/// One request of a batch, as the plan and the columns read it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub id: Uuid,
    pub order: &'a NewOrder,
    /// Its Idempotency-Key, which is its owner's own.
    pub key: Option<&'a str>,
    pub owner: &'a Owner,
}

/// What the replica says of a product: price, or deleted.
pub type Prices = HashMap<i64, (i64, bool)>;

/// An order priced and ready to insert.
#[derive(Debug, Clone)]
pub struct Priced {
    /// Its job's position in the batch.
    pub job: usize,
    pub id: Uuid,
    pub lines: Vec<OrderLine>,
    pub total: i64,
    pub key: Option<String>,
    pub fingerprint: String,
}

/// What a batch will do.
#[derive(Debug, Default)]
pub struct BatchPlan {
    /// Orders to insert.
    pub priced: Vec<Priced>,
    /// Jobs already answered (unknown or missing products).
    pub answered: Vec<(usize, PlaceError)>,
    /// Jobs whose key an earlier job of this batch holds: answered from
    /// that order after the commit.
    pub by_key: Vec<usize>,
}

/// Prices each request and sets aside those that cannot be placed now.
pub fn plan_batch<'a>(
    requests: impl IntoIterator<Item = Request<'a>>,
    prices: &Prices,
) -> BatchPlan {
    let mut plan = BatchPlan::default();
    let mut keys_seen = HashSet::new();
    for (job, request) in requests.into_iter().enumerate() {
        let key = request.key.map(|key| (request.owner, key));
        match price(request.order, prices) {
            Err(error) => plan.answered.push((job, error)),
            Ok(_) if key.is_some_and(|key| !keys_seen.insert(key)) => plan.by_key.push(job),
            Ok((lines, total)) => plan.priced.push(Priced {
                job,
                id: request.id,
                lines,
                total,
                key: request.key.map(str::to_owned),
                fingerprint: request.order.fingerprint(),
            }),
        }
    }
    plan
}

/// Prices an order from the replica: every product known and not deleted.
fn price(order: &NewOrder, prices: &Prices) -> Result<(Vec<OrderLine>, i64), PlaceError> {
    let missing: Vec<i64> = order
        .product_ids()
        .filter(|id| !prices.contains_key(id))
        .collect();
    if !missing.is_empty() {
        return Err(PlaceError::ReplicaMiss(missing));
    }
    let mut lines = Vec::with_capacity(order.items().len());
    let mut total: i64 = 0;
    for item in order.items() {
        let (unit_price, deleted) = prices[&item.product_id];
        if deleted {
            return Err(PlaceError::UnknownProduct(item.product_id));
        }
        // 100 items × 10,000 units × 10^12 cents stays below 2^63.
        total = total.saturating_add(unit_price.saturating_mul(item.quantity));
        lines.push(OrderLine {
            product_id: item.product_id,
            quantity: item.quantity,
            unit_price,
        });
    }
    Ok((lines, total))
}

/// A batch as the placing statement takes it, one array per column: every
/// request, priced or not (the statement prices them from the replica and
/// inserts those it can), and each one's `order.created` event.
pub struct BatchColumns<'a> {
    ids: Vec<Uuid>,
    keys: Vec<Option<&'a str>>,
    fingerprints: Vec<String>,
    issuers: Vec<&'a str>,
    subjects: Vec<&'a str>,
    item_orders: Vec<Uuid>,
    item_products: Vec<i64>,
    item_quantities: Vec<i32>,
    events: Vec<NewEvent>,
}

impl<'a> BatchColumns<'a> {
    /// The columns of `requests`.
    pub fn of(requests: impl IntoIterator<Item = Request<'a>>) -> Result<Self, outbox::Error> {
        let mut columns = BatchColumns {
            ids: Vec::new(),
            keys: Vec::new(),
            fingerprints: Vec::new(),
            issuers: Vec::new(),
            subjects: Vec::new(),
            item_orders: Vec::new(),
            item_products: Vec::new(),
            item_quantities: Vec::new(),
            events: Vec::new(),
        };
        for Request {
            id,
            order,
            key,
            owner,
        } in requests
        {
            columns.ids.push(id);
            columns.keys.push(key);
            columns.fingerprints.push(order.fingerprint());
            columns.issuers.push(&owner.issuer);
            columns.subjects.push(&owner.subject);
            let items: Vec<OrderItem> = order
                .items()
                .iter()
                .map(|item| OrderItem {
                    product_id: item.product_id,
                    quantity: item.quantity,
                })
                .collect();
            for item in &items {
                columns.item_orders.push(id);
                columns.item_products.push(item.product_id);
                // At most 10,000 by validation.
                columns.item_quantities.push(item.quantity as i32);
            }
            columns.events.push(created_event(id, &items)?);
        }
        Ok(columns)
    }

    /// The order ids, in the order of the requests.
    pub fn ids(&self) -> &[Uuid] {
        &self.ids
    }

    /// The events' columns (the placing statement's last five placeholders,
    /// from `$9`).
    pub fn event_columns(&self) -> EventColumns<'_> {
        EventColumns::of(&self.events)
    }

    /// The values of the placing statement's first eight placeholders.
    pub fn params(&self) -> [&(dyn ToSql + Sync); 8] {
        [
            &self.ids,
            &self.keys,
            &self.fingerprints,
            &self.item_orders,
            &self.item_products,
            &self.item_quantities,
            &self.issuers,
            &self.subjects,
        ]
    }
}

/// The `order.created` event of an order, under the order's own id: a
/// re-drive can rebuild it and send it again as the same message.
pub fn created_event(order_id: Uuid, items: &[OrderItem]) -> Result<NewEvent, outbox::Error> {
    let event = OrderCreated {
        order_id,
        items: items.to_vec(),
    };
    Ok(NewEvent::new(order_id, ORDER_CREATED, &event)?.with_id(order_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ItemRequest;

    fn order(items: &[(i64, i64)]) -> NewOrder {
        NewOrder::new(
            items
                .iter()
                .map(|&(product_id, quantity)| ItemRequest {
                    product_id,
                    quantity,
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn a_batch_prices_what_it_can_and_answers_the_rest() {
        let prices: Prices = [(1, (250, false)), (2, (100, true))].into();
        let orders = [
            order(&[(1, 2)]),
            order(&[(2, 1)]),
            order(&[(3, 1)]),
            order(&[(1, 1)]),
        ];
        let keys = [Some("k"), None, None, Some("k")];
        let ids: Vec<Uuid> = orders.iter().map(|_| Uuid::now_v7()).collect();
        let owner = owner("alice");
        let plan = plan_batch(
            (0..4).map(|i| Request {
                id: ids[i],
                order: &orders[i],
                key: keys[i],
                owner: &owner,
            }),
            &prices,
        );
        assert_eq!(plan.priced.len(), 1);
        assert_eq!((plan.priced[0].id, plan.priced[0].total), (ids[0], 500));
        assert_eq!(
            plan.answered,
            [
                (1, PlaceError::UnknownProduct(2)),
                (2, PlaceError::ReplicaMiss(vec![3]))
            ]
        );
        assert_eq!(plan.by_key, [3], "a key held earlier in the batch");
    }

    fn owner(subject: &str) -> Owner {
        Owner {
            issuer: "https://issuer.example/".into(),
            subject: subject.into(),
        }
    }

    #[test]
    fn a_key_is_its_owners_own_within_a_batch_too() {
        let prices: Prices = [(1, (250, false))].into();
        let order = order(&[(1, 1)]);
        let (alice, bob) = (owner("alice"), owner("bob"));
        let requests = [&alice, &bob, &alice].map(|owner| Request {
            id: Uuid::now_v7(),
            order: &order,
            key: Some("same"),
            owner,
        });
        let plan = plan_batch(requests, &prices);
        assert_eq!(plan.priced.len(), 2, "alice's and bob's");
        assert_eq!(plan.by_key, [2], "alice's second");
    }

    #[test]
    fn an_order_created_event_carries_the_order_id_as_its_message_id() {
        let id = Uuid::now_v7();
        let event = created_event(
            id,
            &[OrderItem {
                product_id: 4,
                quantity: 2,
            }],
        )
        .unwrap();
        assert_eq!(event.id, id);
        assert_eq!(event.aggregate_id, id.to_string());
        assert!(
            event.payload.contains(r#""product_id":4"#),
            "{}",
            event.payload
        );
    }
}
