//! The consumer's side of the broker: the subscription (opened within the
//! setup bound, reopened with backoff after a failure), the loop that
//! consumes until the stop signal, and one step of it: a batch taken from
//! the deliveries, applied, acked at once.

use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lapin::Connection;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use platform::shutdown::Signal;

use super::{Consumer, Handler, StepReport};
use crate::backoff::Backoff;
use crate::{Error, Result, broker};

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

impl<H: Handler> Consumer<H> {
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
        while !shutdown.is_cancelled() {
            let opened = tokio::select! {
                opened = self.open_session() => opened,
                _ = shutdown.cancelled() => break,
            };
            let mut session = match opened {
                Ok(session) => session,
                Err(error) => {
                    tracing::warn!(%error, queue = %self.config.queue, "consumer could not subscribe; will retry");
                    platform::shutdown::sleep(&shutdown, backoff.next_delay()).await;
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
                if shutdown.is_cancelled() {
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
                platform::shutdown::sleep(&shutdown, backoff.next_delay()).await;
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
                Err(error) if !error.is_broker() && !shutdown.is_cancelled() => {
                    self.metrics
                        .failures
                        .with_label_values(&[&self.config.queue])
                        .inc();
                    tracing::warn!(%error, queue = %self.config.queue, deliveries = deliveries.len(), "consumer batch not applied; retrying it");
                    platform::shutdown::sleep(shutdown, backoff.next_delay()).await;
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
            _ = shutdown.cancelled() => return Ok(Vec::new()),
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
}
