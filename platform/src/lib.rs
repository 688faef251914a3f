//! What every process of the pipeline runs on: the two services, the
//! standalone relay and the operator and measuring tools alike. Nothing
//! here knows HTTP or the broker: the `outbox` library builds on this
//! crate and pulls in no HTTP server.
//!
//! # Layout
//! - [`settings`]: reading settings from the environment with errors that
//!   name the setting.
//! - [`shutdown`]: the SIGTERM/SIGINT future and the stop signal
//!   background tasks watch.
//! - [`db`]: a service's database (created when absent, migrated, pooled)
//!   and how a failed statement is told apart (worth retrying or not).
//! - [`telemetry`]: `tracing` set-up, readable or JSON.
//! - [`metrics`]: the Prometheus registry each application owns, with the
//!   process's CPU and memory.
//! - [`tls`]: the one crypto provider (ring), installed by every binary.

pub mod db;
pub mod metrics;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
