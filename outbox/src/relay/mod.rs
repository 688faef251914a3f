//! The relay: moves committed outbox rows to the broker.
//!
//! One step ([`Relay::try_publish_batch`]) claims a batch in a transaction,
//! publishes it with pipelined confirms, moves the claimed partitions'
//! cursor past it and records refusals, then commits: one small write per
//! batch, none per row ([`claim`] says how the cursor never skips a row).
//! [`Relay::run`] repeats the step until the outbox is empty, then waits
//! for a commit of its own process or its next poll ([`wake`]).
//!
//! Guarantees:
//! - the cursor moves past a row only after the broker confirmed it; a
//!   crash or a broken connection before the commit leaves it where it was,
//!   and the rows are sent again (at-least-once; consumers dedupe);
//! - with synchronous standbys, a batch leaves only once a standby has
//!   its rows ([`crate::standby`]): a commit that is only local is never
//!   sent;
//! - several relays may run on one outbox: each locks whole partitions, so
//!   events of one aggregate leave in commit order;
//! - a refusal that hits every message of a batch (a queue deleted, a
//!   binding missing, a broker refusing everything) is the broker's or the
//!   topology's, not the rows': the relay declares the topology again on a
//!   new connection and retries with backoff, counting nothing against the
//!   rows. A refused message that packs several events is sent again
//!   unpacked, one event per message, so that a row's own refusal (refused
//!   alone while its neighbours pass) can be told apart; only such a row
//!   counts an attempt, and after `max_attempts` (or at once when larger
//!   than `max_message_bytes`) it is set aside with its reason and never
//!   blocks the rows behind it. Later events of the same aggregate still
//!   flow meanwhile: its next attempt, or a replay once it is set aside,
//!   arrives after its successors, and consumers guard against that
//!   (versioned upserts, one-way status transitions);
//! - a broker that withholds its confirms (a memory alarm, a quorum
//!   without a majority) does not hold the batch's partition locks and
//!   transaction: after `confirm_timeout` the batch is rolled back, the
//!   connection dropped, and the batch retried with backoff.

mod claim;
mod pack;
mod publisher;
mod snapshot;
pub mod wake;

use std::collections::HashSet;
use std::time::Duration;

use deadpool_postgres::{Pool, Transaction};
use platform::shutdown::Signal;
use time::OffsetDateTime;

pub(crate) use claim::ROW_COLUMNS;
pub use claim::{Claim, OutboxRow, claim, plans};
pub(crate) use pack::pack;
pub use publisher::{ConfirmOutcome, Publisher};
pub use wake::rows_committed;

use crate::Result;
use crate::backoff::Backoff;
use crate::envelope::OutgoingMessage;
use crate::metrics::RelayMetrics;
use crate::topology::Topology;

/// How a relay behaves; every field has a setting in the services and CLI.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub amqp_url: crate::broker::BrokerUrl,
    /// Exchange the outbox's events go to.
    pub exchange: String,
    /// Name of the broker connection, shown in the management UI.
    pub connection_name: String,
    /// Rows claimed per batch.
    pub batch_size: usize,
    /// Partitions one batch may lock (of 16). Below 16 lets several relays
    /// share the work; 16 lets one relay fill its batches from everywhere.
    pub claim_partitions: i64,
    /// Envelopes packed into one AMQP message (same event type, in order).
    pub events_per_message: usize,
    /// A row whose payload is larger is set aside at once.
    pub max_message_bytes: usize,
    /// Refusals after which a row is set aside.
    pub max_attempts: i32,
    /// The longest an idle relay waits before it claims again: what rows
    /// committed by another process wait at most ([`wake`]).
    pub poll_interval: Duration,
    /// After a batch that emptied the outbox, or a wake-up, wait this long
    /// for more rows before claiming: fewer, larger transactions and
    /// publishes for a few milliseconds of latency.
    pub linger: Duration,
    /// Longest wait for the broker's confirms of a batch; past it the
    /// batch is rolled back and retried on a new connection.
    pub confirm_timeout: Duration,
}

impl RelayConfig {
    pub fn new(amqp_url: &str, exchange: &str) -> Self {
        RelayConfig {
            amqp_url: crate::broker::BrokerUrl::new(amqp_url),
            exchange: exchange.to_owned(),
            connection_name: format!("relay {exchange}"),
            batch_size: 1000,
            claim_partitions: 16,
            events_per_message: 1,
            max_message_bytes: 4 * 1024 * 1024,
            max_attempts: 5,
            poll_interval: Duration::from_millis(500),
            linger: Duration::ZERO,
            confirm_timeout: Duration::from_secs(10),
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Published(BatchReport),
    /// The broker refused every message of the batch: the cursor stayed
    /// and nothing was counted against its rows, and the next batch runs on
    /// a new connection with the topology declared again.
    BrokerRefused {
        rows: usize,
    },
    /// Nothing to send in the partitions this relay could lock.
    Empty,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Rows the broker confirmed.
    pub published: usize,
    /// AMQP messages those rows travelled in.
    pub messages: usize,
    /// Rows refused this time (they stay unsent or are set aside).
    pub refused: usize,
    pub set_aside: usize,
    /// When the oldest row the broker confirmed was written (rows sent
    /// for the first time only).
    pub oldest_confirmed: Option<OffsetDateTime>,
}

/// A batch sent to the broker, its cursor not moved yet.
#[derive(Debug)]
pub struct SentBatch {
    confirmed: Vec<i64>,
    refused: Vec<(i64, String)>,
    oversized: Vec<(i64, String)>,
    messages: usize,
    /// Rows read from `outbox_refused` (another attempt).
    retries: Vec<i64>,
    advance: Option<claim::Advance>,
    /// When the oldest row the broker confirmed was written, of those
    /// sent for the first time (a retried row's age is its refusals').
    oldest_confirmed: Option<OffsetDateTime>,
}

impl SentBatch {
    /// Whether the broker refused every message it was sent: its fault,
    /// or the topology's, not the rows'.
    fn refused_whole(&self) -> bool {
        self.confirmed.is_empty() && !self.refused.is_empty()
    }
}

/// Rolls a failed batch back and waits for it (at most
/// [`ROLLBACK_TIMEOUT`]; past that, dropping the transaction sends the
/// ROLLBACK anyway, and a dead connection releases everything).
async fn release(tx: Transaction<'_>) {
    if let Err(error) = tokio::time::timeout(ROLLBACK_TIMEOUT, tx.rollback())
        .await
        .unwrap_or(Ok(()))
    {
        tracing::debug!(%error, "rollback of a failed batch failed; its connection is gone");
    }
}

/// The longest [`release`] waits for a rollback.
const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(5);

/// The relay for one outbox.
pub struct Relay {
    pool: Pool,
    topology: Topology,
    config: RelayConfig,
    publisher: Option<Publisher>,
    metrics: RelayMetrics,
}

impl Relay {
    pub fn new(pool: Pool, topology: Topology, config: RelayConfig, metrics: RelayMetrics) -> Self {
        Relay {
            pool,
            topology,
            config,
            publisher: None,
            metrics,
        }
    }

    /// One batch: claim, publish, move the cursor, commit.
    pub async fn try_publish_batch(&mut self) -> Result<Outcome> {
        let mut connection = self.pool.get().await?;
        let tx = connection.transaction().await?;
        // A batch that fails is rolled back before the relay goes on, not
        // as its transaction is dropped (then the ROLLBACK would reach the
        // server a moment later): its claims are released when this
        // returns, for the next attempt of any relay.
        let sent = match self.claim_and_publish(&tx).await {
            Ok(sent) => sent,
            Err(error) => {
                release(tx).await;
                return Err(error);
            }
        };
        let Some(sent) = sent else {
            tx.commit().await?;
            return Ok(Outcome::Empty);
        };
        if sent.refused_whole() {
            // Rolled back: the rows stay as they were.
            release(tx).await;
            self.publisher = None;
            self.metrics.refused_batches.inc();
            tracing::warn!(
                rows = sent.refused.len(),
                messages = sent.messages,
                reason = %sent.refused[0].1,
                exchange = %self.config.exchange,
                "the broker refused every message of a batch; declaring the topology again and retrying"
            );
            return Ok(Outcome::BrokerRefused {
                rows: sent.refused.len(),
            });
        }
        let report = Self::record(&tx, &sent, self.config.max_attempts).await?;
        tx.commit().await?;
        self.metrics.observe_batch(&report);
        Ok(Outcome::Published(report))
    }

    /// The first half of a step: claims rows in `tx` and publishes them,
    /// without moving the cursor. `None` when there was nothing to claim.
    /// Dropping `tx` afterwards is what a crash between publish and commit
    /// looks like: the cursor stays, and the rows go out again.
    pub async fn claim_and_publish(&mut self, tx: &Transaction<'_>) -> Result<Option<SentBatch>> {
        let claim = claim(
            tx,
            self.config.claim_partitions,
            self.config.batch_size as i64,
        )
        .await?;
        if claim.rows.is_empty() {
            return Ok(None);
        }
        if claim.standbys {
            crate::standby::has_what_was_read(&self.pool, &claim.server).await?;
        }
        let (groups, oversized) = pack(
            &claim.rows,
            self.config.events_per_message,
            self.config.max_message_bytes,
        );
        let outcomes = self.publish_groups(&groups).await?;
        let mut sent = SentBatch {
            confirmed: Vec::with_capacity(claim.rows.len()),
            refused: Vec::new(),
            oversized,
            messages: groups.len(),
            retries: claim.retries,
            advance: claim.advance,
            oldest_confirmed: None,
        };
        // A packed message refused while others passed, or the only
        // message of the batch: its rows go again one per message, so that
        // a row refused for itself can be told from its neighbours.
        let unpack = outcomes.contains(&ConfirmOutcome::Confirmed) || groups.len() == 1;
        let mut singles = Vec::new();
        for (group, outcome) in groups.into_iter().zip(outcomes) {
            match outcome {
                ConfirmOutcome::Confirmed => sent.confirmed.extend(&group.row_ids),
                ConfirmOutcome::Refused(_) if unpack && group.row_ids.len() > 1 => {
                    singles.extend(group.unpacked())
                }
                ConfirmOutcome::Refused(reason) => sent
                    .refused
                    .extend(group.row_ids.iter().map(|id| (*id, reason.clone()))),
            }
        }
        if !singles.is_empty() {
            sent.messages += singles.len();
            for (group, outcome) in singles.iter().zip(self.publish_groups(&singles).await?) {
                match outcome {
                    ConfirmOutcome::Confirmed => sent.confirmed.extend(&group.row_ids),
                    ConfirmOutcome::Refused(reason) => {
                        sent.refused.push((group.row_ids[0], reason))
                    }
                }
            }
        }
        let confirmed: HashSet<i64> = sent.confirmed.iter().copied().collect();
        let retried: HashSet<i64> = sent.retries.iter().copied().collect();
        sent.oldest_confirmed = claim
            .rows
            .iter()
            .filter(|row| confirmed.contains(&row.id) && !retried.contains(&row.id))
            .map(|row| row.created_at)
            .min();
        Ok(Some(sent))
    }

    /// Encodes and publishes one message per group; one outcome each.
    async fn publish_groups(&mut self, groups: &[pack::Group]) -> Result<Vec<ConfirmOutcome>> {
        let messages = groups
            .iter()
            .map(pack::Group::message)
            .collect::<std::result::Result<Vec<OutgoingMessage>, _>>()?;
        match self.publish(&messages).await {
            Ok(outcomes) => Ok(outcomes),
            Err(error) => {
                // The connection is suspect: drop it and reconnect next time.
                self.publisher = None;
                Err(error)
            }
        }
    }

    async fn record(
        tx: &Transaction<'_>,
        sent: &SentBatch,
        max_attempts: i32,
    ) -> Result<BatchReport> {
        if let Some(advance) = &sent.advance {
            claim::advance(tx, advance).await?;
        }
        let retried: HashSet<i64> = sent.retries.iter().copied().collect();
        let sent_again: Vec<i64> = sent
            .confirmed
            .iter()
            .copied()
            .filter(|id| retried.contains(id))
            .collect();
        claim::forget_refusals(tx, &sent_again).await?;
        let mut set_aside = claim::record_refusals(tx, &sent.refused, max_attempts).await?;
        // An oversized row will never fit: it is set aside on its first try.
        set_aside += claim::record_refusals(tx, &sent.oversized, 1).await?;
        Ok(BatchReport {
            published: sent.confirmed.len(),
            messages: sent.messages,
            refused: sent.refused.len() + sent.oversized.len(),
            set_aside,
            oldest_confirmed: sent.oldest_confirmed,
        })
    }

    async fn publish(&mut self, messages: &[OutgoingMessage]) -> Result<Vec<ConfirmOutcome>> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        if !self.publisher.as_ref().is_some_and(Publisher::is_connected) {
            let publisher = Publisher::connect(
                &self.config.amqp_url,
                &self.config.connection_name,
                Some(&self.topology),
            )
            .await?;
            tracing::info!(broker = %crate::broker::describe(&self.config.amqp_url), exchange = %self.config.exchange, "relay connected");
            self.publisher = Some(publisher);
        }
        let publisher = self
            .publisher
            .as_ref()
            .ok_or_else(|| crate::Error::Invalid("no publisher".into()))?;
        let timeout = self.config.confirm_timeout;
        tokio::time::timeout(timeout, publisher.publish(&self.config.exchange, messages))
            .await
            .unwrap_or_else(|_| {
                Err(crate::Error::Unavailable(format!(
                    "no publisher confirms within {timeout:?}"
                )))
            })
    }

    /// The broker connection in use, if any (tests close it).
    pub fn publisher(&self) -> Option<&Publisher> {
        self.publisher.as_ref()
    }

    /// Sends batches until `shutdown` fires; between batches lingers, and
    /// when the outbox is empty waits for a commit of this process or its
    /// next poll ([`wake`]). The batch in progress when the signal fires is
    /// finished, not abandoned.
    pub async fn run(mut self, shutdown: Signal) {
        let mut backoff = Backoff::default();
        let mut idle = wake::IdleWait::new(self.config.linger, self.config.poll_interval);
        while !shutdown.is_cancelled() {
            let full_batch = self.config.batch_size;
            let next_commit = wake::next_commit();
            let pause = match self.try_publish_batch().await {
                Ok(Outcome::Published(report)) if report.refused > 0 => Some(backoff.next_delay()),
                Ok(Outcome::BrokerRefused { .. }) => Some(backoff.next_delay()),
                // A full batch: more is waiting, go on at once.
                Ok(Outcome::Published(report))
                    if report.published + report.refused >= full_batch =>
                {
                    backoff.reset();
                    idle.reset();
                    None
                }
                Ok(Outcome::Published(_)) => {
                    backoff.reset();
                    idle.reset();
                    Some(self.config.linger)
                }
                Ok(Outcome::Empty) => {
                    backoff.reset();
                    tokio::select! {
                        // Rows of this process: gather more for the linger.
                        _ = next_commit => {
                            idle.reset();
                            Some(self.config.linger)
                        }
                        _ = tokio::time::sleep(idle.after_empty()) => None,
                        _ = shutdown.cancelled() => None,
                    }
                }
                Err(error) => {
                    self.metrics.failures.inc();
                    tracing::warn!(%error, "relay batch failed; will retry");
                    Some(backoff.next_delay())
                }
            };
            if let Some(pause) = pause.filter(|pause| !pause.is_zero()) {
                platform::shutdown::sleep(&shutdown, pause).await;
            }
        }
        if let Some(publisher) = self.publisher.take() {
            publisher.close().await;
        }
    }
}
