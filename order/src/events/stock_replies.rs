//! `stock.reserved` / `stock.rejected` → order status. A status moves once,
//! from PENDING to CONFIRMED or REJECTED; a reply for an order already
//! decided (a redelivery, a replay, the answer to a re-drive) changes
//! nothing. That one-way move is the record that a reply applied: no inbox
//! row is written.

use std::sync::LazyLock;

use deadpool_postgres::Transaction;
use outbox::consumer::{ApplyError, Batch, Dedupe, Handler};
use outbox::envelope::Envelope;
use outbox::events::Verdict;
use prometheus::{HistogramOpts, HistogramVec, Registry};
use uuid::Uuid;

use crate::domain::OrderStatus;

/// Seconds from an order's 201 to its verdict, by outcome.
#[derive(Clone)]
pub struct ConfirmMetrics {
    pub lag: HistogramVec,
}

impl ConfirmMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let lag = HistogramVec::new(
            HistogramOpts::new(
                "order_confirm_lag_seconds",
                "Time from an order's commit to its CONFIRMED or REJECTED status",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["status"],
        )?;
        registry.register(Box::new(lag.clone()))?;
        Ok(ConfirmMetrics { lag })
    }
}

/// The one-way move: only a PENDING order takes a verdict. No index
/// covers the columns it sets, so it is a HOT update.
static DECIDE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE orders SET status = d.status, reason = d.reason, decided_at = now() \
         FROM unnest($1::uuid[], $2::text[], $3::text[]) AS d(id, status, reason) \
         WHERE orders.id = d.id AND orders.status = '{}' \
         RETURNING orders.status, EXTRACT(EPOCH FROM orders.decided_at - orders.created_at)::float8",
        OrderStatus::Pending.as_str()
    )
});

pub struct StockReplyHandler {
    metrics: ConfirmMetrics,
}

impl StockReplyHandler {
    pub fn new(metrics: ConfirmMetrics) -> Self {
        StockReplyHandler { metrics }
    }
}

impl Handler for StockReplyHandler {
    /// The order and what the stock loop decided for it.
    type Event = (Uuid, Verdict);
    /// (status, seconds from 201 to verdict) of each order decided now,
    /// and how many replies found their order decided already.
    type Outcome = (Vec<(String, f64)>, usize);
    const DEDUPE: Dedupe = Dedupe::Effect;

    fn decode(&self, envelope: &Envelope) -> Result<(Uuid, Verdict), String> {
        Verdict::of_reply(envelope)
    }

    fn applied_before(outcome: &Self::Outcome) -> usize {
        outcome.1
    }

    async fn apply<'a>(
        &'a self,
        tx: &'a Transaction<'_>,
        batch: &'a Batch<'_, (Uuid, Verdict)>,
    ) -> Result<Self::Outcome, ApplyError> {
        if batch.fresh.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let ids: Vec<Uuid> = batch.fresh.iter().map(|reply| reply.event.0).collect();
        let statuses: Vec<&str> = batch
            .fresh
            .iter()
            .map(|reply| OrderStatus::of(reply.event.1).as_str())
            .collect();
        let reasons: Vec<Option<&str>> = batch
            .fresh
            .iter()
            .map(|reply| reply.event.1.reason().map(|reason| reason.as_str()))
            .collect();
        let statement = tx.prepare_cached(&DECIDE_SQL).await?;
        let rows = tx.query(&statement, &[&ids, &statuses, &reasons]).await?;
        let decided = rows
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
        let before = batch.fresh.len().saturating_sub(decided.len());
        Ok((decided, before))
    }

    async fn after_commit(&self, (decided, _): Self::Outcome) {
        for (status, seconds) in decided {
            self.metrics
                .lag
                .with_label_values(&[&status])
                .observe(seconds.max(0.0));
        }
    }
}
