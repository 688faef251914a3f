//! A fresh outbox database and broker namespace per test, a handler whose
//! effect can be counted, and ways to read what reached a queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Pool, Transaction};
use futures_util::StreamExt;
use lapin::BasicProperties;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions};
use lapin::types::FieldTable;
use outbox::consumer::{ApplyError, Batch, Consumer, ConsumerConfig, Handler, StepReport};
use outbox::envelope::{self, Envelope, Received};
use outbox::metrics::{ConsumerMetrics, RelayMetrics};
use outbox::relay::{Outcome, Relay, RelayConfig};
use outbox::topology::{QueueType, Topology};
use outbox::writer::{self, NewEvent};
use platform::db::{Migration, MigrationSet};
use tokio_postgres::Config;
use uuid::Uuid;

pub(crate) fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn base_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A test's own table for the handler's effect: a running total per aggregate.
const EFFECTS_MIGRATION: (&str, &str) = (
    "V100__effects",
    "CREATE TABLE effects (aggregate_id text PRIMARY KEY, total bigint NOT NULL, applications int NOT NULL)",
);

pub(crate) struct TestOutbox {
    pub(crate) database: Config,
    pub(crate) pool: Pool,
    pub(crate) topology: Topology,
}

impl TestOutbox {
    pub(crate) async fn new() -> Self {
        Self::on(Self::fresh_database().await).await
    }

    /// An empty database of the test's own.
    pub(crate) async fn fresh_database() -> Config {
        Self::fresh_database_on(&base_database_url()).await
    }

    /// An empty database of the test's own on the server (or servers) of
    /// `url`.
    pub(crate) async fn fresh_database_on(url: &str) -> Config {
        platform::telemetry::init_for_tests();
        let id = Uuid::new_v4().simple().to_string();
        let mut database = platform::db::parse_url("TEST_DATABASE_URL", url).unwrap();
        database.dbname(format!("outbox_test_{id}"));
        platform::db::ensure_exists(&database).await.unwrap();
        database
    }

    /// The test's own table for the handler's effect, as a service's
    /// migration.
    pub(crate) fn effects_migration() -> Migration {
        Migration::unapplied(EFFECTS_MIGRATION.0, EFFECTS_MIGRATION.1).unwrap()
    }

    /// `database` migrated (the outbox's tables, then the effects table)
    /// with the test's own broker names.
    pub(crate) async fn on(database: Config) -> Self {
        let migrations = [
            outbox::schema::migrations(),
            MigrationSet {
                history: platform::db::SERVICE_HISTORY,
                migrations: vec![Self::effects_migration()],
                before: None,
                after: None,
                grants: &[],
            },
        ];
        platform::db::migrate(&database, &migrations, None)
            .await
            .unwrap();
        let id = Uuid::new_v4().simple().to_string();
        let pool = platform::db::pool(&database, 8).unwrap();
        let topology = Topology::new(&format!("test.{}.", &id[..12]), QueueType::Quorum)
            .expiring_after(Duration::from_secs(60));
        let connection = outbox::broker::connect(&amqp_url(), "test setup")
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        topology.declare(&channel).await.unwrap();
        connection.close(200, "done".into()).await.unwrap();
        TestOutbox {
            database,
            pool,
            topology,
        }
    }

    /// Appends events `(aggregate, amount)` of type `order.created` in one transaction.
    pub(crate) async fn append(&self, events: &[(String, i64)]) {
        let mut client = self.pool.get().await.unwrap();
        let tx = client.transaction().await.unwrap();
        writer::append(&tx, &new_events(events)).await.unwrap();
        tx.commit().await.unwrap();
    }

    pub(crate) fn relay_config(&self) -> RelayConfig {
        let mut config = RelayConfig::new(&amqp_url(), &self.topology.orders_exchange());
        config.poll_interval = Duration::from_millis(50);
        config
    }

    /// A relay whose `AMQP_URL` is `list`.
    pub(crate) fn relay_on(&self, list: &str) -> Relay {
        self.relay(RelayConfig {
            amqp_url: outbox::broker::BrokerUrl::new(list),
            ..self.relay_config()
        })
    }

    pub(crate) fn relay(&self, config: RelayConfig) -> Relay {
        Relay::new(
            self.pool.clone(),
            self.topology.clone(),
            config,
            RelayMetrics::unregistered(),
        )
    }

    /// Runs the relay step until the outbox is empty; returns rows
    /// published. A batch the broker refused whole is tried again, a few
    /// times at most.
    pub(crate) async fn drain(&self, relay: &mut Relay) -> usize {
        let mut published = 0;
        let mut refused = 0;
        loop {
            match relay.try_publish_batch().await.unwrap() {
                Outcome::Published(report) => published += report.published,
                Outcome::BrokerRefused { rows } => {
                    refused += 1;
                    assert!(refused < 5, "the broker keeps refusing {rows} rows");
                }
                Outcome::Empty => return published,
            }
        }
    }

    /// [`Self::drain`] once the relay's broker connection was lost: the
    /// first batches, on the dead connection, may fail (a few at most);
    /// the next connects again.
    pub(crate) async fn drain_after_loss(&self, relay: &mut Relay) -> usize {
        let mut published = 0;
        for _ in 0..5 {
            match relay.try_publish_batch().await {
                Ok(Outcome::Published(report)) => {
                    published += report.published;
                    break;
                }
                Ok(other) => panic!("rows waiting, yet {other:?}"),
                Err(error) => eprintln!("batch on the lost connection: {error}"),
            }
        }
        published + self.drain(relay).await
    }

    /// The aggregates of the events that reached the orders queue (waiting
    /// for up to `expected` events), sorted.
    pub(crate) async fn sent_aggregates(&self, expected: usize) -> Vec<String> {
        let mut aggregates: Vec<String> = self
            .take_events(&self.topology.order_created_queue(), expected)
            .await
            .into_iter()
            .map(|event| event.aggregate_id)
            .collect();
        aggregates.sort();
        aggregates
    }

    pub(crate) async fn count(&self, sql: &str) -> i64 {
        let client = self.pool.get().await.unwrap();
        client.query_one(sql, &[]).await.unwrap().get(0)
    }

    /// Runs consumer steps until a step finds nothing; sums their reports.
    pub(crate) async fn consume_all(&self) -> StepReport {
        self.consume_all_with(self.consumer_config()).await
    }

    /// [`Self::consume_all`] with a consumer of this configuration.
    pub(crate) async fn consume_all_with(&self, config: ConsumerConfig) -> StepReport {
        let consumer = self.consumer_with(config);
        let mut session = consumer.open_session().await.unwrap();
        let signal = platform::shutdown::Signal::new();
        let mut total = StepReport::default();
        loop {
            let step = consumer
                .try_consume_batch(&mut session, Duration::from_secs(1), &signal)
                .await
                .unwrap();
            if step.deliveries == 0 {
                break;
            }
            total.deliveries += step.deliveries;
            total.applied += step.applied;
            total.duplicates += step.duplicates;
            total.dead_lettered += step.dead_lettered;
        }
        session.close().await;
        total
    }

    pub(crate) fn consumer(&self) -> Consumer<CountingHandler> {
        self.consumer_with(self.consumer_config())
    }

    pub(crate) fn consumer_config(&self) -> ConsumerConfig {
        ConsumerConfig::new(&amqp_url(), &self.topology.order_created_queue())
    }

    pub(crate) fn consumer_with(&self, config: ConsumerConfig) -> Consumer<CountingHandler> {
        Consumer::new(
            Arc::new(CountingHandler),
            self.pool.clone(),
            self.topology.clone(),
            config,
            ConsumerMetrics::unregistered(),
        )
    }

    /// Totals per aggregate as the handler applied them.
    pub(crate) async fn effects(&self) -> HashMap<String, (i64, i32)> {
        let client = self.pool.get().await.unwrap();
        let rows = client
            .query("SELECT aggregate_id, total, applications FROM effects", &[])
            .await
            .unwrap();
        rows.iter()
            .map(|row| (row.get(0), (row.get(1), row.get(2))))
            .collect()
    }

    /// Publishes a raw body to the orders exchange as `order.created`.
    pub(crate) async fn publish_raw(&self, body: &[u8]) {
        self.publish_raw_with(body, BasicProperties::default().with_delivery_mode(2))
            .await
    }

    /// Publishes `body` as it is, with `properties`, as "order.created".
    pub(crate) async fn publish_raw_with(&self, body: &[u8], properties: BasicProperties) {
        let connection = outbox::broker::connect(&amqp_url(), "test publisher")
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        channel.confirm_select(Default::default()).await.unwrap();
        channel
            .basic_publish(
                self.topology.orders_exchange().into(),
                "order.created".into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        connection.close(200, "done".into()).await.unwrap();
    }

    /// Reads messages from `queue` until `expected` events arrived or the
    /// queue stays quiet for two seconds; acks them. Returns the events and,
    /// for each message, its headers.
    pub(crate) async fn take_events(&self, queue: &str, expected: usize) -> Vec<Envelope> {
        take(queue, expected)
            .await
            .into_iter()
            .flat_map(|(events, _)| events)
            .collect()
    }

    /// The dead letters recorded in this outbox's database.
    pub(crate) async fn dead_letters(&self) -> Vec<outbox::dead_letters::operate::DeadLetterRow> {
        let client = self.pool.get().await.unwrap();
        outbox::dead_letters::operate::list(&client, true, 1000)
            .await
            .unwrap()
    }

    pub(crate) async fn cleanup(self) {
        self.pool.close();
        let connection = outbox::broker::connect(&amqp_url(), "test cleanup")
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let _ = self.topology.delete(&channel).await;
        let _ = connection.close(200, "done".into()).await;
        platform::db::drop_database(&self.database).await.unwrap();
    }
}

/// Takes a transaction id now, as a transaction's first write does.
pub(crate) async fn take_xid(tx: &Transaction<'_>) {
    tx.query_one("SELECT pg_current_xact_id()", &[])
        .await
        .unwrap();
}

/// Whether `done` comes true within `limit`, asking every 50 ms.
pub(crate) async fn within(limit: Duration, mut done: impl AsyncFnMut() -> bool) -> bool {
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// `n` events `(aggregate, amount)` over seven aggregates, amounts
/// `offset..offset + n`.
pub(crate) fn events(n: usize, offset: usize) -> Vec<(String, i64)> {
    (offset..offset + n)
        .map(|i| (format!("agg-{}", i % 7), i as i64))
        .collect()
}

pub(crate) fn new_events(events: &[(String, i64)]) -> Vec<NewEvent> {
    events
        .iter()
        .map(|(aggregate, amount)| {
            NewEvent::new(
                aggregate,
                "order.created",
                &serde_json::json!({ "amount": amount }),
            )
            .unwrap()
        })
        .collect()
}

type Taken = (Vec<Envelope>, (Vec<u8>, String));

async fn take(queue: &str, expected: usize) -> Vec<Taken> {
    let connection = outbox::broker::connect(&amqp_url(), "test reader")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut taken = Vec::new();
    let mut events = 0;
    while events < expected {
        // The first delivery may wait for a relay to start and connect (a
        // few seconds on a busy machine); after that, a pause this long
        // means nothing more is coming.
        let wait = if events == 0 {
            Duration::from_secs(5)
        } else {
            Duration::from_secs(3)
        };
        let Ok(Some(delivery)) = tokio::time::timeout(wait, consumer.next()).await else {
            break;
        };
        let delivery = delivery.unwrap();
        let reason = delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|headers| {
                headers
                    .inner()
                    .get(envelope::DEAD_LETTER_REASON_HEADER)
                    .cloned()
            })
            .map(|value| match value {
                lapin::types::AMQPValue::LongString(text) => {
                    String::from_utf8_lossy(text.as_bytes()).into_owned()
                }
                other => format!("{other:?}"),
            })
            .unwrap_or_default();
        let decoded: Vec<Envelope> = envelope::decode(&delivery.data)
            .into_iter()
            .filter_map(|received| match received {
                Received::Event(envelope) => Some(envelope),
                Received::Malformed { .. } => None,
            })
            .collect();
        events += decoded.len().max(1);
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .unwrap();
        taken.push((decoded, (delivery.data.clone(), reason)));
    }
    connection.close(200, "done".into()).await.unwrap();
    taken
}

/// Adds each event's `amount` to its aggregate's total; refuses negative
/// amounts as poison and payloads without an amount at decode. Amounts
/// from [`OUTAGE`] and [`BROKEN_DEPLOY`] on fail their first `amount −
/// base` attempts: as if the store were down, or the code ran SQL against
/// a column that does not exist. An amount from [`POISON_ONCE`] on is
/// poison the first time only (a bug since fixed, say).
pub(crate) struct CountingHandler;

pub(crate) const OUTAGE: i64 = 1_000_000;
pub(crate) const BROKEN_DEPLOY: i64 = 2_000_000;
pub(crate) const POISON_ONCE: i64 = 3_000_000;

/// Failed attempts so far, by event id (ids are unique across tests).
static ATTEMPTS: std::sync::LazyLock<std::sync::Mutex<HashMap<Uuid, i64>>> =
    std::sync::LazyLock::new(Default::default);

/// Whether this attempt at `id` should still fail, counting it.
fn fails_again(id: Uuid, failures: i64) -> bool {
    let mut attempts = ATTEMPTS.lock().unwrap();
    let attempt = attempts.entry(id).or_default();
    *attempt += 1;
    *attempt <= failures
}

impl Handler for CountingHandler {
    type Event = i64;
    type Outcome = ();

    fn decode(&self, envelope: &Envelope) -> Result<i64, String> {
        #[derive(serde::Deserialize)]
        struct Payload {
            amount: i64,
        }
        envelope
            .payload_as::<Payload>()
            .map(|payload| payload.amount)
            .map_err(|error| format!("payload: {error}"))
    }

    async fn apply<'a>(
        &'a self,
        tx: &'a Transaction<'_>,
        batch: &'a Batch<'_, i64>,
    ) -> Result<(), ApplyError> {
        for inbound in &batch.fresh {
            if inbound.event < 0 {
                return Err(ApplyError::Poison {
                    message_id: inbound.envelope.id,
                    reason: "negative amount".into(),
                });
            }
            let id = inbound.envelope.id;
            if (OUTAGE..BROKEN_DEPLOY).contains(&inbound.event)
                && fails_again(id, inbound.event - OUTAGE)
            {
                return Err(ApplyError::Failed(outbox::Error::Unavailable(
                    "the store is down (test)".into(),
                )));
            }
            if inbound.event >= POISON_ONCE && fails_again(id, 1) {
                return Err(ApplyError::Poison {
                    message_id: id,
                    reason: "poison the first time (test)".into(),
                });
            }
            if (BROKEN_DEPLOY..POISON_ONCE).contains(&inbound.event)
                && fails_again(id, inbound.event - BROKEN_DEPLOY)
            {
                tx.execute("SELECT no_such_column FROM effects", &[])
                    .await?;
            }
            tx.execute(
                "INSERT INTO effects VALUES ($1, $2, 1) ON CONFLICT (aggregate_id) \
                 DO UPDATE SET total = effects.total + $2, applications = effects.applications + 1",
                &[&inbound.envelope.aggregate_id, &inbound.event],
            )
            .await?;
        }
        Ok(())
    }

    async fn after_commit(&self, _outcome: ()) {}
}
