//! Publishing with publisher confirms, pipelined: every message of a batch
//! is written to the channel first, then the confirms are awaited, so a
//! batch costs one round trip to the broker, not one per message.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Confirmation, Connection};

use crate::envelope::OutgoingMessage;
use crate::topology::Topology;
use crate::{Result, broker};

/// What the broker said about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmOutcome {
    Confirmed,
    /// Nacked, or returned as unroutable: counted as an attempt.
    Refused(String),
}

/// A connection and a confirm-mode channel, with the topology declared.
pub struct Publisher {
    connection: Connection,
    channel: Channel,
}

impl Publisher {
    /// Connects; with a topology, declares it first (relays do, so nothing
    /// they publish is unroutable; replay publishes to what exists). The
    /// setup after the handshake is bounded by [`broker::SETUP_TIMEOUT`].
    pub async fn connect(url: &str, name: &str, topology: Option<&Topology>) -> Result<Self> {
        let (connection, channel, ()) =
            broker::open(url, name, broker::SETUP_TIMEOUT, |channel| async move {
                if let Some(topology) = topology {
                    topology.declare(&channel).await?;
                }
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
                Ok(())
            })
            .await?;
        Ok(Publisher {
            connection,
            channel,
        })
    }

    /// Whether the connection is still usable.
    pub fn is_connected(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

    /// The underlying connection (tests close it to simulate a failure).
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// Publishes every message to `exchange` (a message for one queue
    /// goes to that queue), then waits for all confirms. Returns one
    /// outcome per message, in order. A broken channel or connection is an
    /// `Err`: nothing can be said about any message of the batch.
    pub async fn publish(
        &self,
        exchange: &str,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<ConfirmOutcome>> {
        let options = BasicPublishOptions {
            // Unroutable messages come back instead of vanishing.
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let mut pending = Vec::with_capacity(messages.len());
        for message in messages {
            let (exchange, routing_key) = match &message.queue {
                Some(queue) => ("", queue.as_str()),
                None => (exchange, message.routing_key.as_str()),
            };
            let confirm = self
                .channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    options,
                    &message.body,
                    message.properties.clone(),
                )
                .await?;
            pending.push(confirm);
        }
        let mut outcomes = Vec::with_capacity(pending.len());
        for confirm in pending {
            outcomes.push(match confirm.await? {
                Confirmation::Ack(None) => ConfirmOutcome::Confirmed,
                Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                    ConfirmOutcome::Refused(format!(
                        "returned by the broker: {} {}",
                        returned.reply_code, returned.reply_text
                    ))
                }
                Confirmation::Nack(None) => ConfirmOutcome::Refused("nacked by the broker".into()),
                Confirmation::NotRequested => {
                    ConfirmOutcome::Refused("channel is not in confirm mode".into())
                }
            });
        }
        Ok(outcomes)
    }

    pub async fn close(&self) {
        broker::close(&self.connection, "relay stopping").await;
    }
}
