//! Applying one batch of deliveries: decoded into events (what does not
//! decode is a dead letter), deduplicated through the inbox and applied by
//! the handler in one transaction; a poison event or a refusal of the
//! store sets only the event at fault aside. The dead letters are recorded,
//! the handler's after-commit work runs, and the figures are counted.

use std::collections::HashSet;

use lapin::message::Delivery;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{ApplyError, Batch, Consumer, Dedupe, Handler, Inbound, StepReport};
use crate::dead_letters::{self, DeadLetter, Origin, Source};
use crate::envelope::{self, Received};
use crate::{Error, Result, inbox};

impl<H: Handler> Consumer<H> {
    pub(super) async fn process(&self, deliveries: &[Delivery]) -> Result<StepReport> {
        let mut dead = Vec::new();
        let mut report = StepReport::default();
        let mut events = self.decode_all(deliveries, &mut dead, &mut report);
        let outcomes = self
            .apply_removing_poison(&mut events, &mut dead, &mut report)
            .await?;
        dead_letters::record(&self.pool, &self.config.queue, &dead, Source::Consumer).await?;
        for outcome in outcomes {
            self.handler.after_commit(outcome).await;
        }
        report.dead_lettered = dead.len();
        let queue = self.config.queue.as_str();
        self.metrics
            .events
            .with_label_values(&[queue, "applied"])
            .inc_by(report.applied as u64);
        self.metrics
            .events
            .with_label_values(&[queue, "duplicate"])
            .inc_by(report.duplicates as u64);
        self.metrics
            .events
            .with_label_values(&[queue, "dead_lettered"])
            .inc_by(report.dead_lettered as u64);
        self.metrics
            .batch_events
            .with_label_values(&[queue])
            .observe((report.applied + report.duplicates + report.dead_lettered) as f64);
        Ok(report)
    }

    /// Decodes every delivery; an event seen twice in one batch counts as a
    /// duplicate at once.
    fn decode_all(
        &self,
        deliveries: &[Delivery],
        dead: &mut Vec<DeadLetter>,
        report: &mut StepReport,
    ) -> Vec<Inbound<H::Event>> {
        let mut seen = HashSet::new();
        let mut events = Vec::new();
        for delivery in deliveries {
            for received in envelope::decode(&delivery.data) {
                match received {
                    Received::Event(envelope) if !seen.insert(envelope.id) => {
                        report.duplicates += 1
                    }
                    Received::Event(envelope) => match self.handler.decode(&envelope) {
                        Ok(event) => events.push(Inbound { envelope, event }),
                        Err(reason) => dead.push(DeadLetter::of_event(&envelope, reason)),
                    },
                    Received::Malformed { raw, reason } => dead.push(DeadLetter::malformed(
                        raw,
                        reason,
                        &Origin::of(&delivery.properties),
                    )),
                }
            }
        }
        events
    }

    /// Applies `events` in one transaction, taking out poison events one at
    /// a time; when the store rejects the data without naming an event,
    /// falls back to one transaction per event.
    async fn apply_removing_poison(
        &self,
        events: &mut Vec<Inbound<H::Event>>,
        dead: &mut Vec<DeadLetter>,
        report: &mut StepReport,
    ) -> Result<Vec<H::Outcome>> {
        loop {
            if events.is_empty() {
                return Ok(Vec::new());
            }
            match self.apply_once(events.iter().collect(), report).await {
                Ok(outcome) => return Ok(vec![outcome]),
                Err(ApplyError::Poison { message_id, reason }) => {
                    let Some(at) = events.iter().position(|e| e.envelope.id == message_id) else {
                        return Err(Error::Invalid(format!(
                            "handler named unknown poison event {message_id}"
                        )));
                    };
                    tracing::warn!(%message_id, %reason, "event can never apply; dead-lettering it");
                    dead.push(DeadLetter::of_event(&events.remove(at).envelope, reason));
                }
                Err(ApplyError::Failed(error)) if !error.is_in_the_data() => return Err(error),
                Err(ApplyError::Failed(error)) if events.len() == 1 => {
                    let inbound = events.remove(0);
                    dead.push(DeadLetter::of_event(
                        &inbound.envelope,
                        format!("rejected by the store: {error}"),
                    ));
                    return Ok(Vec::new());
                }
                Err(ApplyError::Failed(error)) => {
                    tracing::warn!(%error, "batch rejected by the store; applying its events one by one");
                    return self
                        .apply_one_by_one(std::mem::take(events), dead, report)
                        .await;
                }
            }
        }
    }

    async fn apply_one_by_one(
        &self,
        events: Vec<Inbound<H::Event>>,
        dead: &mut Vec<DeadLetter>,
        report: &mut StepReport,
    ) -> Result<Vec<H::Outcome>> {
        let mut outcomes = Vec::new();
        for inbound in events {
            match self.apply_once(vec![&inbound], report).await {
                Ok(outcome) => outcomes.push(outcome),
                Err(ApplyError::Failed(error)) if !error.is_in_the_data() => return Err(error),
                Err(error) => dead.push(DeadLetter::of_event(&inbound.envelope, error.to_string())),
            }
        }
        Ok(outcomes)
    }

    async fn apply_once(
        &self,
        events: Vec<&Inbound<H::Event>>,
        report: &mut StepReport,
    ) -> std::result::Result<H::Outcome, ApplyError> {
        let mut connection = self.pool.get().await.map_err(Error::from)?;
        let tx = connection.transaction().await?;
        let (fresh, duplicates): (Vec<_>, Vec<_>) = match H::DEDUPE {
            Dedupe::Inbox => {
                let ids: Vec<Uuid> = events.iter().map(|e| e.envelope.id).collect();
                let fresh_ids = inbox::record(&tx, &ids).await?;
                events
                    .into_iter()
                    .partition(|e| fresh_ids.contains(&e.envelope.id))
            }
            Dedupe::Effect => (events, Vec::new()),
        };
        let batch = Batch { fresh, duplicates };
        let outcome = self.handler.apply(&tx, &batch).await?;
        tx.commit().await?;
        let applied_before = H::applied_before(&outcome).min(batch.fresh.len());
        let now = OffsetDateTime::now_utc();
        let lag = self
            .metrics
            .lag_seconds
            .with_label_values(&[&self.config.queue]);
        for inbound in &batch.fresh {
            lag.observe(
                (now - inbound.envelope.occurred_at)
                    .as_seconds_f64()
                    .max(0.0),
            );
        }
        report.applied += batch.fresh.len() - applied_before;
        report.duplicates += batch.duplicates.len() + applied_before;
        Ok(outcome)
    }
}
