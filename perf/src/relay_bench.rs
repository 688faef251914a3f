//! The relay's throughput, from committed rows to confirmed publishes, next
//! to the broker's own ceiling measured in the same run with messages of
//! the same size.

use std::time::{Duration, Instant};

use outbox::metrics::RelayMetrics;
use outbox::relay::{Outcome, Relay, RelayConfig};
use outbox::topology::{QueueType, Topology};
use outbox::writer::{self, NewEvent};
use serde::Serialize;
use tokio_postgres::Config;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize)]
pub struct RelayFigures {
    pub rows: usize,
    pub events_per_message: usize,
    /// Relays draining the outbox at once, each its own connection and
    /// channel, each locking 16 / relays partitions per batch.
    pub relays: usize,
    pub seconds: f64,
    pub events_per_sec: f64,
    pub messages_per_sec: f64,
    /// Bytes of one event's message when sent alone.
    pub message_bytes: usize,
}

/// Fills a scratch outbox with `rows` order events over 100 aggregates
/// (not timed), then times `relays` relays draining it together.
pub async fn measure(
    base: &Config,
    amqp_url: &str,
    rows: usize,
    events_per_message: usize,
    relays: usize,
) -> anyhow::Result<RelayFigures> {
    let mut database = base.clone();
    let id = Uuid::new_v4().simple().to_string();
    database.dbname(format!("perf_relay_{id}"));
    platform::db::ensure_exists(&database).await?;
    platform::db::migrate(&database, &[outbox::schema::migrations()], None).await?;
    let pool = platform::db::pool(&database, 4)?;
    let topology = Topology::new(&format!("perf.{}.", &id[..12]), QueueType::Quorum)
        .expiring_after(Duration::from_secs(300));
    let payload =
        serde_json::json!({"order_id": Uuid::nil(), "items": [{"product_id": 1, "quantity": 1}]});
    for chunk in (0..rows).collect::<Vec<_>>().chunks(1000) {
        let events = chunk
            .iter()
            .map(|n| NewEvent::new(format!("order-{}", n % 100), "order.created", &payload))
            .collect::<Result<Vec<_>, _>>()?;
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        writer::append(&tx, &events).await?;
        tx.commit().await?;
    }
    let relays = relays.max(1);
    let config = RelayConfig {
        batch_size: 2000,
        events_per_message,
        claim_partitions: (16 / relays).max(1) as i64,
        ..RelayConfig::new(amqp_url, &topology.orders_exchange())
    };
    let metrics = RelayMetrics::unregistered();
    let mut workers: Vec<Relay> = (0..relays)
        .map(|_| {
            Relay::new(
                pool.clone(),
                topology.clone(),
                config.clone(),
                metrics.clone(),
            )
        })
        .collect();
    // Connect and declare before the clock starts (each publishes a batch).
    for relay in &mut workers {
        relay.try_publish_batch().await?;
    }
    let already = metrics.published.get() as usize;
    let started = Instant::now();
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut relay| {
            tokio::spawn(async move {
                let mut messages = 0;
                while let Outcome::Published(report) = relay.try_publish_batch().await? {
                    messages += report.messages;
                }
                anyhow::Ok((relay, messages))
            })
        })
        .collect();
    let mut messages = 0;
    let mut finished = Vec::new();
    for task in tasks {
        let (relay, sent) = task.await??;
        messages += sent;
        finished.push(relay);
    }
    let seconds = started.elapsed().as_secs_f64();
    let events = metrics.published.get() as usize - already;
    let sample = outbox::envelope::Envelope {
        id: Uuid::now_v7(),
        event_type: "order.created".into(),
        aggregate_id: "order-1".into(),
        occurred_at: time::OffsetDateTime::now_utc(),
        payload: serde_json::value::RawValue::from_string(payload.to_string())?,
    };
    let message_bytes = outbox::envelope::encode(std::slice::from_ref(&sample))?
        .body
        .len();
    if let Some(publisher) = finished.first().and_then(Relay::publisher) {
        let channel = publisher.connection().create_channel().await?;
        topology.delete(&channel).await?;
    }
    pool.close();
    platform::db::drop_database(&database).await?;
    Ok(RelayFigures {
        rows: events,
        events_per_message,
        relays,
        seconds,
        events_per_sec: events as f64 / seconds,
        messages_per_sec: messages as f64 / seconds,
        message_bytes,
    })
}
