//! The ceilings of this machine, measured in the same run as the system:
//! what PostgreSQL and RabbitMQ do on their own, with nothing of ours in
//! between. The load report prints the system's figures as a share of them.
//!
//! - PostgreSQL: commits per second of the rows one order writes (order,
//!   item, outbox row), one order per transaction from several connections,
//!   and 100 orders per transaction;
//! - RabbitMQ: persistent messages of an order event's size published with
//!   confirms on one channel, confirms pipelined, to a quorum queue.

use std::time::{Duration, Instant};

use lapin::BasicProperties;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde::Serialize;
use tokio_postgres::Config;
use uuid::Uuid;

/// The rows of one order, as the pipeline writes them (order, item, outbox).
const SCHEMA: &str = "
    CREATE TABLE orders (id uuid PRIMARY KEY, status text NOT NULL, total bigint NOT NULL,
        idempotency_key text UNIQUE, fingerprint text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
    CREATE TABLE order_items (order_id uuid NOT NULL, product_id bigint NOT NULL, quantity int NOT NULL,
        unit_price bigint NOT NULL, PRIMARY KEY (order_id, product_id));
    CREATE TABLE outbox (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, message_id uuid NOT NULL UNIQUE,
        aggregate_id text NOT NULL, partition smallint NOT NULL, event_type text NOT NULL, payload jsonb NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(), published_at timestamptz);
    CREATE INDEX outbox_pending ON outbox (partition, id) WHERE published_at IS NULL;";

const INSERT_ORDERS: &str = "INSERT INTO orders (id, status, total, fingerprint) \
    SELECT id, 'PENDING', 100, '1x1' FROM unnest($1::uuid[]) AS o(id)";
const INSERT_ITEMS: &str =
    "INSERT INTO order_items SELECT id, 1, 1, 100 FROM unnest($1::uuid[]) AS o(id)";
const INSERT_OUTBOX: &str = "INSERT INTO outbox (message_id, aggregate_id, partition, event_type, payload) \
    SELECT id, id::text, 0, 'order.created', '{\"order_id\":1,\"items\":[{\"product_id\":1,\"quantity\":1}]}' \
    FROM unnest($1::uuid[]) AS o(id)";

/// An order event's size on the wire, roughly.
pub const MESSAGE_BYTES: usize = 300;

#[derive(Debug, Clone, Serialize)]
pub struct Ceilings {
    /// Orders (3 rows each) committed per second, one per transaction.
    pub postgres_orders_per_sec_single: f64,
    /// Orders committed per second, 100 per transaction.
    pub postgres_orders_per_sec_batched: f64,
    /// Persistent messages confirmed per second on one channel.
    pub broker_messages_per_sec: f64,
}

/// Measures both PostgreSQL ceilings on a scratch database next to `base`.
pub async fn postgres(
    base: &Config,
    seconds: u64,
    connections: usize,
) -> anyhow::Result<(f64, f64)> {
    let mut scratch = base.clone();
    scratch.dbname(format!("perf_ceiling_{}", Uuid::new_v4().simple()));
    platform::db::ensure_exists(&scratch).await?;
    let setup = platform::db::connect(&scratch).await?;
    setup.batch_execute(SCHEMA).await?;
    let single = orders_per_second(&scratch, seconds, connections, 1).await;
    let batched = orders_per_second(&scratch, seconds, connections, 100).await;
    drop(setup);
    platform::db::drop_database(&scratch).await?;
    Ok((single?, batched?))
}

async fn orders_per_second(
    database: &Config,
    seconds: u64,
    connections: usize,
    per_tx: usize,
) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let database = database.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = platform::db::connect(&database).await?;
            let (orders, items, outbox) = (
                client.prepare(INSERT_ORDERS).await?,
                client.prepare(INSERT_ITEMS).await?,
                client.prepare(INSERT_OUTBOX).await?,
            );
            let mut committed = 0u64;
            while Instant::now() < deadline {
                let ids: Vec<Uuid> = (0..per_tx).map(|_| Uuid::now_v7()).collect();
                let tx = client.transaction().await?;
                tx.execute(&orders, &[&ids]).await?;
                tx.execute(&items, &[&ids]).await?;
                tx.execute(&outbox, &[&ids]).await?;
                tx.commit().await?;
                committed += per_tx as u64;
            }
            anyhow::Ok(committed)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Publishes persistent messages with confirms on one channel, keeping
/// `window` confirms outstanding, for `seconds`; returns messages/s.
pub async fn broker(
    amqp_url: &str,
    seconds: u64,
    window: usize,
    message_bytes: usize,
) -> anyhow::Result<f64> {
    let connection = outbox::broker::connect(amqp_url, "perf broker ceiling").await?;
    let channel = connection.create_channel().await?;
    let queue = format!("perf.ceiling.{}", Uuid::new_v4().simple());
    let mut arguments = FieldTable::default();
    arguments.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let body = vec![b'x'; message_bytes];
    let properties = BasicProperties::default().with_delivery_mode(2);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut confirmed = 0u64;
    while Instant::now() < deadline {
        let mut pending = Vec::with_capacity(window);
        for _ in 0..window {
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    properties.clone(),
                )
                .await?;
            pending.push(confirm);
        }
        for confirm in pending {
            confirm.await?;
            confirmed += 1;
        }
    }
    let rate = confirmed as f64 / started.elapsed().as_secs_f64();
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    let _ = connection.close(200, "done".into()).await;
    Ok(rate)
}
