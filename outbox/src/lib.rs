//! The transactional outbox and the idempotent inbox, the heart of the
//! pipeline: both services send events through it and receive them
//! exactly once in effect.
//!
//! A service writes its state change and its events in one transaction
//! ([`writer::append`]); the [`relay`] moves committed rows to RabbitMQ with
//! publisher confirms; on the other side a [`consumer`] applies batches of
//! deliveries in one transaction each, recording message ids in the
//! [`inbox`] so a redelivery changes nothing, and acks after the commit.
//!
//! # Layout
//! - [`events`]: the pipeline's event names and payloads (the contract
//!   between the services).
//! - [`settings`]: broker, relay, consumer and retention settings from the
//!   environment, shared by both services.
//! - [`pipeline`]: a service's relays, consumers, dead-letter drain and
//!   retention, started in one call.
//! - [`envelope`]: the event envelope and its AMQP encoding (one event per
//!   message, or a packed run of events).
//! - [`schema`]: the outbox and inbox tables, as migrations services include.
//! - [`writer`]: appending events inside the caller's transaction.
//! - [`unsent`]: the one rule of what is still to send, which every
//!   reader of the outbox applies.
//! - [`relay`]: claim, publish with confirms, move the cursor; woken by
//!   its process's commits, polling otherwise; setting aside rows the
//!   broker keeps refusing.
//! - [`consumer`] and [`inbox`]: batch consumption with dedupe.
//! - [`dead_letters`]: what consumers and the broker gave up on, kept for
//!   an operator to list, requeue or purge.
//! - [`topology`]: exchanges, queues, dead-letter queues, bindings.
//! - [`partitions`]: the outbox's time partitions, made ahead and dropped
//!   whole once sent and past the window; [`retention`]: when, and the
//!   inbox's purge; `vacuum`: vacuuming as autovacuum would, where the
//!   server has it off.
//! - [`replay`] and [`stats`]: what the `outbox` operator tool runs.
//! - [`broker`], [`backoff`], [`metrics`], [`error`]: the supporting pieces.

pub mod audit;
pub mod backoff;
pub mod broker;
pub mod consumer;
pub mod dead_letters;
pub mod envelope;
pub mod error;
pub mod events;
pub mod inbox;
pub mod metrics;
pub mod partitions;
pub mod pipeline;
pub mod relay;
pub mod replay;
pub mod retention;
pub mod schema;
pub mod settings;
pub mod standby;
pub mod stats;
pub mod topology;
pub mod unsent;
pub mod vacuum;
pub mod writer;

pub use error::{Error, Result};
