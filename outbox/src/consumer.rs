//! The batch consumer: takes deliveries from a queue in batches (prefetch),
//! applies each batch in one transaction through the inbox, and acks only
//! after the commit.
//!
//! Per batch:
//! 1. decode every message into envelopes and every envelope into the
//!    handler's event; what does not decode is a dead letter;
//! 2. in one transaction: record the ids in the inbox (new ones are
//!    "fresh", the rest "duplicates"), let the handler apply the batch,
//!    commit. If the handler names one event as poison, it becomes a dead
//!    letter and the transaction is retried without it; if the store
//!    rejects the batch for its data, events are applied one by one so
//!    only the bad one is set aside; any other failure (an outage, a bug
//!    of a deploy) retries the whole batch with backoff, deliveries held;
//! 3. record the dead letters (with their reason) in the service's
//!    `dead_letters` table ([`crate::dead_letters`]);
//! 4. run the handler's after-commit work (cache and counter updates);
//! 5. ack every delivery of the batch at once.
//!
//! A crash anywhere before step 5 means redelivery, and the inbox turns
//! the redelivered events into duplicates: the effect happens once.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Pool, Transaction};
use futures_util::{FutureExt, StreamExt};
use lapin::Connection;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use service::shutdown::Signal;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::backoff::Backoff;
use crate::dead_letters::{self, DeadLetter, Source};
use crate::envelope::{self, Envelope, Received};
use crate::metrics::ConsumerMetrics;
use crate::topology::Topology;
use crate::{Error, Result, broker, inbox};

/// An event with the envelope it came in.
#[derive(Debug)]
pub struct Inbound<E> {
    pub envelope: Envelope,
    pub event: E,
}

/// What a handler applies in one transaction.
#[derive(Debug)]
pub struct Batch<'a, E> {
    /// Events whose ids were not in the inbox (with [`Dedupe::Effect`]:
    /// every event): apply their effects.
    pub fresh: Vec<&'a Inbound<E>>,
    /// Events already applied before (redeliveries, replays): their effect
    /// is committed. Handlers may use them to redo idempotent after-commit
    /// work that a crash could have cut short.
    pub duplicates: Vec<&'a Inbound<E>>,
}

/// How an event applied before is told from a new one. Either way each
/// event's effect happens once; only where that is recorded differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dedupe {
    /// The consumer records every event's id in the `inbox` table, in the
    /// batch's transaction, and hands the handler only new ones as fresh.
    Inbox,
    /// The effect is its own record: a row keyed by what the event is
    /// about, a one-way state change, an upsert ordered by version. Every
    /// event comes as fresh; the handler applies each at most once by its
    /// effect, and says how many it found applied before. One insert (and
    /// index entry) less per event.
    Effect,
}

/// Why a batch did not apply.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// This event can never apply; it goes to the dead-letter queue.
    #[error("event {message_id} can never apply: {reason}")]
    Poison { message_id: Uuid, reason: String },
    #[error(transparent)]
    Failed(#[from] Error),
}

impl From<tokio_postgres::Error> for ApplyError {
    fn from(error: tokio_postgres::Error) -> Self {
        ApplyError::Failed(error.into())
    }
}

/// What a service does with the events of one queue.
pub trait Handler: Send + Sync + 'static {
    /// The decoded, validated event.
    type Event: Send + Sync + 'static;
    /// What the handler needs after the commit.
    type Outcome: Send + 'static;

    /// How this handler's events are deduplicated.
    const DEDUPE: Dedupe = Dedupe::Inbox;

    /// Decodes and validates an envelope; `Err` makes it a dead letter.
    fn decode(&self, envelope: &Envelope) -> std::result::Result<Self::Event, String>;

    /// Of the events handed in as fresh, how many the handler found
    /// applied before ([`Dedupe::Effect`] handlers; counted as duplicates).
    fn applied_before(_outcome: &Self::Outcome) -> usize {
        0
    }

    /// Applies the batch inside `tx`; the caller records the inbox rows
    /// (with [`Dedupe::Inbox`]) and commits.
    fn apply<'a>(
        &'a self,
        tx: &'a Transaction<'_>,
        batch: &'a Batch<'_, Self::Event>,
    ) -> impl Future<Output = std::result::Result<Self::Outcome, ApplyError>> + Send + 'a;

    /// Runs after the commit, before the ack.
    fn after_commit(&self, outcome: Self::Outcome) -> impl Future<Output = ()> + Send;
}

/// Where and how a consumer reads.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub amqp_url: crate::broker::BrokerUrl,
    pub queue: String,
    pub connection_name: String,
    /// Deliveries the broker sends ahead; also the largest batch.
    pub prefetch: u16,
    /// Once a delivery arrives, wait up to this long for more to fill the
    /// batch: fewer, larger transactions for a few milliseconds of latency.
    pub linger: Duration,
    /// Longest the setup after the handshake may take (see
    /// [`broker::SETUP_TIMEOUT`]).
    pub setup_timeout: Duration,
}

impl ConsumerConfig {
    pub fn new(amqp_url: &str, queue: &str) -> Self {
        ConsumerConfig {
            amqp_url: crate::broker::BrokerUrl::new(amqp_url),
            queue: queue.to_owned(),
            connection_name: format!("consumer {queue}"),
            prefetch: 256,
            linger: Duration::ZERO,
            setup_timeout: broker::SETUP_TIMEOUT,
        }
    }
}

/// An open subscription.
pub struct Session {
    connection: Connection,
    deliveries: lapin::Consumer,
}

impl Session {
    pub async fn close(self) {
        broker::close(&self.connection, "consumer stopping").await;
    }

    pub fn connection(&self) -> &Connection {
        &self.connection
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepReport {
    pub deliveries: usize,
    pub applied: usize,
    pub duplicates: usize,
    pub dead_lettered: usize,
}

/// A consumer of one queue, applying through a [`Handler`].
pub struct Consumer<H: Handler> {
    handler: Arc<H>,
    pool: Pool,
    topology: Topology,
    config: ConsumerConfig,
    metrics: ConsumerMetrics,
}

impl<H: Handler> Consumer<H> {
    pub fn new(
        handler: Arc<H>,
        pool: Pool,
        topology: Topology,
        config: ConsumerConfig,
        metrics: ConsumerMetrics,
    ) -> Self {
        Consumer {
            handler,
            pool,
            topology,
            config,
            metrics,
        }
    }

    /// Connects, declares the topology and subscribes, within the
    /// configured setup timeout.
    pub async fn open_session(&self) -> Result<Session> {
        let config = &self.config;
        let (connection, _channel, deliveries) = broker::open(
            &config.amqp_url,
            &config.connection_name,
            config.setup_timeout,
            |channel| async move {
                self.topology.declare(&channel).await?;
                channel
                    .basic_qos(config.prefetch, BasicQosOptions::default())
                    .await?;
                Ok(channel
                    .basic_consume(
                        config.queue.as_str().into(),
                        "".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await?)
            },
        )
        .await?;
        Ok(Session {
            connection,
            deliveries,
        })
    }

    /// Consumes until `shutdown`, reconnecting with backoff after failures.
    /// A batch in progress when the signal fires is finished and acked.
    pub async fn run(self, shutdown: Signal) {
        let mut backoff = Backoff::default();
        while !shutdown.is_fired() {
            let opened = tokio::select! {
                opened = self.open_session() => opened,
                _ = shutdown.wait() => break,
            };
            let mut session = match opened {
                Ok(session) => session,
                Err(error) => {
                    tracing::warn!(%error, queue = %self.config.queue, "consumer could not subscribe; will retry");
                    shutdown.sleep(backoff.next_delay()).await;
                    continue;
                }
            };
            tracing::info!(queue = %self.config.queue, "consumer subscribed");
            let connected = self
                .metrics
                .connected
                .with_label_values(&[&self.config.queue]);
            connected.set(1);
            let failed = loop {
                if shutdown.is_fired() {
                    break false;
                }
                match self
                    .try_consume_batch(&mut session, Duration::from_secs(1), &shutdown)
                    .await
                {
                    Ok(_) => backoff.reset(),
                    Err(error) => {
                        self.metrics
                            .failures
                            .with_label_values(&[&self.config.queue])
                            .inc();
                        tracing::warn!(%error, queue = %self.config.queue, "consumer batch failed; unacked deliveries return to the queue");
                        break true;
                    }
                }
            };
            connected.set(0);
            session.close().await;
            if failed {
                shutdown.sleep(backoff.next_delay()).await;
            }
        }
    }

    /// One step: waits up to `wait` for a delivery, takes whatever else is
    /// already buffered (up to the prefetch), applies it all, acks.
    pub async fn try_consume_batch(
        &self,
        session: &mut Session,
        wait: Duration,
        shutdown: &Signal,
    ) -> Result<StepReport> {
        let deliveries = self.next_batch(session, wait, shutdown).await?;
        let Some(last) = deliveries.last() else {
            return Ok(StepReport::default());
        };
        // A batch the store cannot take now (an outage, a failed deploy) is
        // retried here, its deliveries held: handing them back to the broker
        // would count against the queue's delivery limit, and a long outage
        // would dead-letter good events.
        let mut backoff = Backoff::default();
        let mut report = loop {
            match self.process(&deliveries).await {
                Ok(report) => break report,
                Err(error) if !error.is_broker() && !shutdown.is_fired() => {
                    self.metrics
                        .failures
                        .with_label_values(&[&self.config.queue])
                        .inc();
                    tracing::warn!(%error, queue = %self.config.queue, deliveries = deliveries.len(), "consumer batch not applied; retrying it");
                    shutdown.sleep(backoff.next_delay()).await;
                }
                Err(error) => return Err(error),
            }
        };
        last.acker.ack(BasicAckOptions { multiple: true }).await?;
        report.deliveries = deliveries.len();
        Ok(report)
    }

    async fn next_batch(
        &self,
        session: &mut Session,
        wait: Duration,
        shutdown: &Signal,
    ) -> Result<Vec<Delivery>> {
        let first = tokio::select! {
            next = tokio::time::timeout(wait, session.deliveries.next()) => next,
            _ = shutdown.wait() => return Ok(Vec::new()),
        };
        let first = match first {
            Err(_elapsed) => return Ok(Vec::new()),
            Ok(None) => {
                return Err(Error::Invalid(
                    "the broker cancelled the subscription".into(),
                ));
            }
            Ok(Some(delivery)) => delivery?,
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + self.config.linger;
        while batch.len() < usize::from(self.config.prefetch) {
            let next = match session.deliveries.next().now_or_never() {
                Some(next) => next,
                None if self.config.linger.is_zero() => break,
                None => match tokio::time::timeout_at(deadline, session.deliveries.next()).await {
                    Ok(next) => next,
                    Err(_elapsed) => break,
                },
            };
            match next {
                Some(Ok(delivery)) => batch.push(delivery),
                // An error or a cancelled subscription: apply what we have;
                // the next step meets the error.
                _ => break,
            }
        }
        Ok(batch)
    }

    async fn process(&self, deliveries: &[Delivery]) -> Result<StepReport> {
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
                        delivery
                            .properties
                            .kind()
                            .as_ref()
                            .map(|kind| kind.to_string()),
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
