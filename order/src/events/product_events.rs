//! `product.upserted` / `product.deleted` → the local product replica.
//! Versions order the events: a row only takes a newer version, so
//! redeliveries and out-of-order arrivals leave the newest state. That
//! versioned upsert is the record that an event applied: no inbox row is
//! written.

use std::collections::HashMap;

use deadpool_postgres::Transaction;
use outbox::consumer::{ApplyError, Batch, Dedupe, Handler};
use outbox::envelope::Envelope;
use outbox::events::{PRODUCT_DELETED, PRODUCT_UPSERTED, ProductDeleted, ProductUpserted};

use crate::store::REPLICA_UPSERT_SQL;

/// A product's state as one event tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductState {
    pub id: i64,
    pub name: String,
    pub price: i64,
    pub version: i64,
    pub deleted: bool,
}

pub struct ProductEventHandler;

impl Handler for ProductEventHandler {
    type Event = ProductState;
    /// Events that changed nothing (an older or equal version).
    type Outcome = usize;
    const DEDUPE: Dedupe = Dedupe::Effect;

    fn applied_before(unchanged: &usize) -> usize {
        *unchanged
    }

    fn decode(&self, envelope: &Envelope) -> Result<ProductState, String> {
        let bad =
            |error: serde_json::Error| format!("not a {} payload: {error}", envelope.event_type);
        match envelope.event_type.as_str() {
            PRODUCT_UPSERTED => {
                let event: ProductUpserted = envelope.payload_as().map_err(bad)?;
                Ok(ProductState {
                    id: event.product_id,
                    name: event.name,
                    price: event.price,
                    version: event.version,
                    deleted: false,
                })
            }
            PRODUCT_DELETED => {
                let event: ProductDeleted = envelope.payload_as().map_err(bad)?;
                Ok(ProductState {
                    id: event.product_id,
                    name: String::new(),
                    price: 0,
                    version: event.version,
                    deleted: true,
                })
            }
            other => Err(format!(
                "unexpected event type {other:?} on the product events queue"
            )),
        }
    }

    async fn apply<'a>(
        &'a self,
        tx: &'a Transaction<'_>,
        batch: &'a Batch<'_, ProductState>,
    ) -> Result<usize, ApplyError> {
        // One row per product, the newest of the batch: the upsert cannot
        // touch the same row twice in one statement.
        let mut newest: HashMap<i64, &ProductState> = HashMap::new();
        for inbound in &batch.fresh {
            let state = &inbound.event;
            if newest
                .get(&state.id)
                .is_none_or(|seen| seen.version < state.version)
            {
                newest.insert(state.id, state);
            }
        }
        if newest.is_empty() {
            return Ok(0);
        }
        let states: Vec<&ProductState> = newest.into_values().collect();
        let ids: Vec<i64> = states.iter().map(|s| s.id).collect();
        let names: Vec<&str> = states.iter().map(|s| s.name.as_str()).collect();
        let prices: Vec<i64> = states.iter().map(|s| s.price).collect();
        let versions: Vec<i64> = states.iter().map(|s| s.version).collect();
        let deleted: Vec<bool> = states.iter().map(|s| s.deleted).collect();
        let statement = tx.prepare_cached(REPLICA_UPSERT_SQL).await?;
        let changed = tx
            .execute(&statement, &[&ids, &names, &prices, &versions, &deleted])
            .await?;
        Ok(batch.fresh.len().saturating_sub(changed as usize))
    }

    async fn after_commit(&self, _: usize) {}
}
