//! The drain of the broker's dead-letter queues: what RabbitMQ
//! dead-lettered on its own (a message redelivered past the queue's
//! delivery limit, say) moves into the service's `dead_letters` table with
//! the broker's reason, and is acked there only after it was recorded.
//! Consumers write their own dead letters straight into the table; the
//! queues hold only what the broker put there, so they stay near empty and
//! a poll every few seconds with `basic_get` is enough.
//!
//! The drain also keeps the `dead_letters` gauge of `/metrics`.

use std::time::Duration;

use deadpool_postgres::Pool;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};
use platform::shutdown::Signal;
use prometheus::IntGaugeVec;

use super::{DeadLetter, Origin, Source, record, waiting};
use crate::backoff::Backoff;
use crate::envelope::DEAD_LETTER_REASON_HEADER;
use crate::topology::Topology;
use crate::{Result, broker};

/// Time between two drains (and gauge updates).
const EVERY: Duration = Duration::from_secs(5);
/// Messages taken from one dead-letter queue per drain.
const BATCH: usize = 100;

/// Where the drain reads and what it keeps up to date.
pub struct Drain {
    pub pool: Pool,
    pub amqp_url: crate::broker::BrokerUrl,
    pub topology: Topology,
    /// The work queues this service consumes; their dead-letter queues
    /// are drained.
    pub queues: Vec<String>,
    /// Dead letters waiting, by queue.
    pub gauge: IntGaugeVec,
}

impl Drain {
    /// Drains every `EVERY` until `shutdown` on one connection, opened
    /// again with backoff when it fails.
    pub async fn run(self, shutdown: Signal) {
        let mut backoff = Backoff::default();
        let mut session: Option<(Connection, Channel)> = None;
        while !shutdown.is_cancelled() {
            let drained = async {
                if session.as_ref().is_none_or(|(connection, channel)| {
                    !connection.status().connected() || !channel.status().connected()
                }) {
                    session = Some(self.connect().await?);
                }
                match &session {
                    Some((_, channel)) => self.drain_once(channel).await,
                    None => Ok(0),
                }
            }
            .await;
            let pause = match drained {
                Ok(_) => {
                    backoff.reset();
                    EVERY
                }
                Err(error) => {
                    tracing::warn!(%error, "dead-letter drain failed; will retry");
                    session = None;
                    backoff.next_delay()
                }
            };
            platform::shutdown::sleep(&shutdown, pause).await;
        }
        if let Some((connection, _)) = session {
            broker::close(&connection, "stopping").await;
        }
    }

    /// A connection and a channel, the topology declared (the dead-letter
    /// queues exist before anything is read from them).
    pub async fn connect(&self) -> Result<(Connection, Channel)> {
        let (connection, channel, ()) = broker::open(
            &self.amqp_url,
            "dead-letter drain",
            broker::SETUP_TIMEOUT,
            |channel| async move { self.topology.declare(&channel).await },
        )
        .await?;
        Ok((connection, channel))
    }

    /// One drain of every dead-letter queue, then the gauge; returns the
    /// messages moved.
    pub async fn drain_once(&self, channel: &Channel) -> Result<usize> {
        let mut moved = 0;
        for queue in &self.queues {
            moved += self.drain_queue(channel, queue).await?;
        }
        self.update_gauge().await?;
        Ok(moved)
    }

    async fn drain_queue(&self, channel: &Channel, queue: &str) -> Result<usize> {
        let dead_letter_queue = Topology::dead_letter_queue(queue);
        let mut letters = Vec::new();
        let mut last = None;
        let mut messages = 0;
        while messages < BATCH {
            let Some(message) = channel
                .basic_get(
                    dead_letter_queue.as_str().into(),
                    BasicGetOptions::default(),
                )
                .await?
            else {
                break;
            };
            letters.extend(dead_letters_of(&message.delivery));
            last = Some(message.delivery);
            messages += 1;
        }
        let Some(last) = last else {
            return Ok(0);
        };
        record(&self.pool, queue, &letters, Source::Broker).await?;
        last.acker.ack(BasicAckOptions { multiple: true }).await?;
        tracing::warn!(
            queue,
            messages,
            events = letters.len(),
            "dead letters moved from the broker's dead-letter queue; `outbox dead-letters list` shows them"
        );
        Ok(messages)
    }

    async fn update_gauge(&self) -> Result<()> {
        let client = self.pool.get().await?;
        let counts = waiting(&client).await?;
        for queue in &self.queues {
            let count = counts
                .iter()
                .find(|(name, _)| name == queue)
                .map_or(0, |(_, count)| *count);
            self.gauge.with_label_values(&[queue]).set(count);
        }
        Ok(())
    }
}

/// The dead letters a message from a dead-letter queue carries, with the
/// reason the broker gave (or the one an older consumer put in a header).
fn dead_letters_of(delivery: &Delivery) -> Vec<DeadLetter> {
    let headers = delivery.properties.headers().as_ref();
    let reason = headers
        .and_then(|headers| text(headers, DEAD_LETTER_REASON_HEADER))
        .or_else(|| {
            headers.and_then(|headers| {
                text(headers, "x-first-death-reason")
                    .map(|reason| format!("dead-lettered by the broker: {reason}"))
            })
        })
        .unwrap_or_else(|| "dead-lettered by the broker".to_owned());
    DeadLetter::of_body(&delivery.data, &reason, &Origin::of(&delivery.properties))
}

fn text(headers: &FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name)? {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
        _ => None,
    }
}
