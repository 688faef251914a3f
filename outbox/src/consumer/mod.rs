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
//!
//! # Layout
//! - [`handler`]: what a service implements (decode, apply, after commit)
//!   and the batch it is handed.
//! - `session`: the subscription, the consuming loop and one step of it.
//! - `apply`: a batch through the inbox in one transaction, poison events
//!   and the store's refusals set aside as dead letters.

mod apply;
pub mod handler;
mod session;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;

pub use handler::{ApplyError, Batch, Dedupe, Handler, Inbound};
pub use session::Session;

use crate::broker;
use crate::metrics::ConsumerMetrics;
use crate::topology::Topology;

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
}
