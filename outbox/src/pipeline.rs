//! A service's share of the pipeline, started in one call from its
//! settings: its relays (its outbox to its exchange), a consumer for each
//! queue it reads, the drain of those queues' dead letters into its
//! `dead_letters` table, and retention. What comes back is what the
//! service must stop (the workers watch its stop signal) and what its
//! readiness reports of the broker.

use std::sync::Arc;

use deadpool_postgres::Pool;
use platform::db::Pools;
use platform::shutdown::Signal;
use prometheus::Registry;
use tokio::task::JoinHandle;

use crate::consumer::{Consumer, ConsumerConfig, Handler};
use crate::dead_letters::drain::Drain;
use crate::metrics::{ConsumerMetrics, RelayMetrics};
use crate::relay::Relay;
use crate::settings::PipelineSettings;
use crate::topology::Topology;

/// What a service sends and reads.
pub struct Plan {
    /// The service's name, which starts its connections' names (`order
    /// relay 1`, `order stock-reply consumer`).
    pub service: &'static str,
    /// The exchange its outbox rows are published to.
    pub exchange: String,
    /// The queues it consumes, each with its handler. The first is the one
    /// whose subscription readiness reports as the broker's state.
    pub subscriptions: Vec<Subscription>,
    /// The service's own busiest tables, vacuumed as autovacuum would
    /// where the server has it off.
    pub busy_tables: &'static [&'static str],
}

/// A queue and the handler that applies its events.
pub struct Subscription {
    queue: String,
    /// What the consumer is, in its connection's name (`stock-reply consumer`).
    role: &'static str,
    start: StartConsumer,
}

/// Starts the consumer of a subscription: keeps the handler's type while a
/// plan holds subscriptions of several.
type StartConsumer = Box<dyn FnOnce(ConsumerParts, Signal) -> JoinHandle<()> + Send>;

/// What a consumer is built from besides its handler.
struct ConsumerParts {
    pool: Pool,
    topology: Topology,
    config: ConsumerConfig,
    metrics: ConsumerMetrics,
}

impl Subscription {
    pub fn new<H: Handler>(queue: String, role: &'static str, handler: H) -> Self {
        let handler = Arc::new(handler);
        Subscription {
            queue,
            role,
            start: Box::new(move |parts: ConsumerParts, shutdown| {
                let ConsumerParts {
                    pool,
                    topology,
                    config,
                    metrics,
                } = parts;
                let consumer = Consumer::new(handler, pool, topology, config, metrics);
                tokio::spawn(consumer.run(shutdown))
            }),
        }
    }
}

/// The pipeline of a service, running.
pub struct Started {
    /// What the service must wait for on shutdown, after firing the signal
    /// it passed in.
    pub workers: Vec<JoinHandle<()>>,
    consumers: ConsumerMetrics,
    /// The queue whose subscription tells whether the broker is reached.
    watched_queue: Option<String>,
}

impl Started {
    /// Whether the service's first consumer is subscribed, and where each
    /// of the process's broker connections went (name, node): what
    /// readiness reports of the broker.
    pub fn broker_probe(
        &self,
    ) -> impl Fn() -> (bool, Vec<(String, String)>) + Send + Sync + 'static {
        let consumers = self.consumers.clone();
        let queue = self.watched_queue.clone();
        move || {
            let subscribed = queue
                .as_deref()
                .is_some_and(|queue| consumers.is_connected(queue));
            (subscribed, crate::broker::connections())
        }
    }
}

impl PipelineSettings {
    /// Makes the outbox's and the inbox's partitions ahead (before
    /// anything is written) as the database's owner (`pools.owner`), then
    /// starts `plan`'s relays (none when `RELAY_ENABLED` is false), the
    /// outbox gauges, consumers and dead-letter drain on `pools.runtime`
    /// and retention on `pools.owner`, each watching `shutdown`; their
    /// metrics go to `registry`, and `database` is named in the log line
    /// that says so. The service wakes its relays after each commit of
    /// outbox rows ([`crate::writer::commit`],
    /// [`crate::relay::rows_committed`]).
    pub async fn start(
        &self,
        plan: Plan,
        pools: &Pools,
        database: &tokio_postgres::Config,
        registry: &Registry,
        shutdown: &Signal,
    ) -> Result<Started, Box<dyn std::error::Error + Send + Sync>> {
        let pool = &pools.runtime;
        let client = pools.owner.get().await.map_err(crate::Error::from)?;
        use crate::partitions::{Table, make_ahead};
        make_ahead(&client, Table::Outbox, &self.retention.slicing()).await?;
        make_ahead(&client, Table::Inbox, &self.retention.inbox_slicing()).await?;
        drop(client);
        let consumers = ConsumerMetrics::register(registry)?;
        let relays = RelayMetrics::register(registry)?;
        let mut workers = Vec::new();
        if self.relay_enabled {
            for n in 1..=self.relay_workers {
                let name = format!("{} relay {n}", plan.service);
                let relay = Relay::new(
                    pool.clone(),
                    self.topology(),
                    self.relay_config(&plan.exchange, &name),
                    relays.clone(),
                );
                workers.push(tokio::spawn(relay.run(shutdown.clone())));
            }
        }
        workers.push(tokio::spawn(crate::stats::keep_gauges(
            pool.clone(),
            relays.clone(),
            shutdown.clone(),
        )));
        let queues: Vec<String> = plan.subscriptions.iter().map(|s| s.queue.clone()).collect();
        for subscription in plan.subscriptions {
            let name = format!("{} {}", plan.service, subscription.role);
            let parts = ConsumerParts {
                pool: pool.clone(),
                topology: self.topology(),
                config: self.consumer_config(&subscription.queue, &name),
                metrics: consumers.clone(),
            };
            workers.push((subscription.start)(parts, shutdown.clone()));
        }
        let drain = Drain {
            pool: pool.clone(),
            amqp_url: self.amqp_url.clone(),
            topology: self.topology(),
            queues: queues.clone(),
            gauge: consumers.dead_letters.clone(),
        };
        workers.push(tokio::spawn(drain.run(shutdown.clone())));
        workers.push(tokio::spawn(crate::retention::run(
            pools.owner.clone(),
            self.retention,
            plan.busy_tables,
            shutdown.clone(),
        )));
        tracing::info!(
            service = plan.service,
            database = %platform::db::describe(database),
            broker = %crate::broker::describe(&self.amqp_url),
            exchange = %plan.exchange,
            ?queues,
            "pipeline started"
        );
        Ok(Started {
            workers,
            consumers,
            watched_queue: queues.into_iter().next(),
        })
    }
}
