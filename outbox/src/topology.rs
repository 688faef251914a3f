//! The broker topology: durable topic exchanges, durable queues (quorum by
//! default) each with a dead-letter queue, and the bindings between them.
//!
//! Every process that publishes or consumes declares the whole pipeline
//! topology when it connects. Declarations are idempotent, and declaring
//! everything everywhere means no event is ever published to an exchange
//! with no queue bound yet (it would be dropped as unroutable).
//!
//! All names carry an optional namespace prefix, so tests (and several
//! pipelines on one broker) never see each other's messages.

use std::str::FromStr;
use std::time::Duration;

use lapin::options::{
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::Result;

/// Queue implementation to declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueType {
    /// Replicated, durable, with a delivery limit (RabbitMQ 3.8+).
    Quorum,
    /// Single-node classic queues, for brokers without quorum queues.
    Classic,
}

impl FromStr for QueueType {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "quorum" => Ok(QueueType::Quorum),
            "classic" => Ok(QueueType::Classic),
            other => Err(format!("{other:?} is neither quorum nor classic")),
        }
    }
}

/// Deliveries after which the broker itself dead-letters a message that
/// keeps failing (a consumer crashing on it, say). Quorum queues only.
const DELIVERY_LIMIT: i64 = 20;

/// A durable queue bound to one exchange.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    pub name: String,
    pub exchange: String,
    pub routing_keys: Vec<String>,
}

/// The names of the pipeline's exchanges and queues, under a namespace.
#[derive(Debug, Clone)]
pub struct Topology {
    namespace: String,
    queue_type: QueueType,
    /// Tests set this so their queues disappear once unused.
    expires: Option<Duration>,
}

impl Topology {
    pub fn new(namespace: &str, queue_type: QueueType) -> Self {
        Topology {
            namespace: namespace.to_owned(),
            queue_type,
            expires: None,
        }
    }

    /// Queues and exchanges are deleted by the broker after this long unused.
    pub fn expiring_after(mut self, idle: Duration) -> Self {
        self.expires = Some(idle);
        self
    }

    fn name(&self, base: &str) -> String {
        format!("{}{base}", self.namespace)
    }

    /// Where the order service's events go (`order.created`).
    pub fn orders_exchange(&self) -> String {
        self.name("orders")
    }

    /// Where the product service's events go (`stock.*`, `product.*`).
    pub fn products_exchange(&self) -> String {
        self.name("products")
    }

    /// Where messages that can never apply go, routed by their queue's name.
    pub fn dead_letter_exchange(&self) -> String {
        self.name("dead-letter")
    }

    /// `order.created`, consumed by the product service.
    pub fn order_created_queue(&self) -> String {
        self.name("product.order-created")
    }

    /// `stock.reserved` / `stock.rejected`, consumed by the order service.
    pub fn stock_replies_queue(&self) -> String {
        self.name("order.stock-replies")
    }

    /// `product.upserted` / `product.deleted`, consumed by the order service.
    pub fn product_events_queue(&self) -> String {
        self.name("order.product-events")
    }

    /// The dead-letter queue of a queue.
    pub fn dead_letter_queue(queue: &str) -> String {
        format!("{queue}.dead-letter")
    }

    /// Every work queue of the pipeline.
    pub fn queues(&self) -> Vec<QueueSpec> {
        vec![
            QueueSpec {
                name: self.order_created_queue(),
                exchange: self.orders_exchange(),
                routing_keys: vec!["order.created".into()],
            },
            QueueSpec {
                name: self.stock_replies_queue(),
                exchange: self.products_exchange(),
                routing_keys: vec!["stock.*".into()],
            },
            QueueSpec {
                name: self.product_events_queue(),
                exchange: self.products_exchange(),
                routing_keys: vec!["product.*".into()],
            },
        ]
    }

    /// Declares exchanges, queues, dead-letter queues and bindings.
    pub async fn declare(&self, channel: &Channel) -> Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for exchange in [self.orders_exchange(), self.products_exchange()] {
            channel
                .exchange_declare(
                    exchange.into(),
                    ExchangeKind::Topic,
                    durable,
                    FieldTable::default(),
                )
                .await?;
        }
        let dead_letter = self.dead_letter_exchange();
        channel
            .exchange_declare(
                dead_letter.as_str().into(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await?;
        for queue in self.queues() {
            let dlq = Self::dead_letter_queue(&queue.name);
            self.declare_queue(channel, &dlq, None).await?;
            channel
                .queue_bind(
                    dlq.into(),
                    dead_letter.as_str().into(),
                    queue.name.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            self.declare_queue(channel, &queue.name, Some(&dead_letter))
                .await?;
            for key in &queue.routing_keys {
                channel
                    .queue_bind(
                        queue.name.as_str().into(),
                        queue.exchange.as_str().into(),
                        key.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    async fn declare_queue(
        &self,
        channel: &Channel,
        name: &str,
        dead_letter: Option<&str>,
    ) -> Result<()> {
        let mut arguments = FieldTable::default();
        let mut set = |key: &str, value: AMQPValue| {
            arguments.insert(ShortString::from(key), value);
        };
        if self.queue_type == QueueType::Quorum {
            set("x-queue-type", AMQPValue::LongString("quorum".into()));
            if dead_letter.is_some() {
                set("x-delivery-limit", AMQPValue::LongLongInt(DELIVERY_LIMIT));
            }
        }
        if let Some(exchange) = dead_letter {
            set(
                "x-dead-letter-exchange",
                AMQPValue::LongString(exchange.into()),
            );
            set(
                "x-dead-letter-routing-key",
                AMQPValue::LongString(name.into()),
            );
        }
        if let Some(idle) = self.expires {
            set("x-expires", AMQPValue::LongLongInt(idle.as_millis() as i64));
        }
        let options = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(name.into(), options, arguments)
            .await?;
        Ok(())
    }

    /// Messages waiting in each dead-letter queue; a queue not declared yet
    /// counts 0. A passive declare of a missing queue closes its channel,
    /// so each queue gets its own.
    pub async fn dead_letter_counts(
        &self,
        connection: &lapin::Connection,
    ) -> Result<Vec<(String, u32)>> {
        let mut counts = Vec::new();
        for queue in self.queues() {
            let name = Self::dead_letter_queue(&queue.name);
            let channel = connection.create_channel().await?;
            let options = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            let count = match channel
                .queue_declare(name.as_str().into(), options, FieldTable::default())
                .await
            {
                Ok(declared) => declared.message_count(),
                Err(_) => 0,
            };
            counts.push((name, count));
        }
        Ok(counts)
    }

    /// Deletes the queues and exchanges (tests clean up with it).
    pub async fn delete(&self, channel: &Channel) -> Result<()> {
        for queue in self.queues() {
            for name in [Self::dead_letter_queue(&queue.name), queue.name] {
                channel
                    .queue_delete(name.into(), QueueDeleteOptions::default())
                    .await?;
            }
        }
        for exchange in [
            self.orders_exchange(),
            self.products_exchange(),
            self.dead_letter_exchange(),
        ] {
            channel
                .exchange_delete(
                    exchange.into(),
                    lapin::options::ExchangeDeleteOptions::default(),
                )
                .await?;
        }
        Ok(())
    }
}
