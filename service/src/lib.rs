//! What every service of the pipeline runs on.
//!
//! The order and product services share these mechanisms, and each has
//! exactly one home here:
//!
//! # Layout
//! - [`http`]: the HTTP/1.1 server core on `may` coroutines, with the guards
//!   the request path needs (bounded heads and bodies, timeouts, panics
//!   answered with 500), the response type and the JSON error body.
//! - [`bridge`]: how a coroutine hands work to the tokio runtime and parks
//!   until the answer comes, without blocking a worker thread.
//! - [`json`]: reading request bodies field by field (400 versus 422).
//! - [`config`]: reading settings from the environment with errors that name
//!   the setting.
//! - [`telemetry`]: `tracing` set-up, readable or JSON.
//! - [`metrics`]: the Prometheus registry each application owns.
//! - [`db`]: creating a service's database, its connection pool and running
//!   its migrations.
//! - [`lifecycle`]: binding a service's server, keeping its workers, and
//!   draining both in order on shutdown.
//! - [`runtime`]: starting the may workers and the tokio runtime.
//! - [`shutdown`]: the SIGTERM/SIGINT future and the stop signal background
//!   tasks watch.

pub mod bridge;
pub mod config;
pub mod db;
pub mod http;
pub mod json;
pub mod lifecycle;
pub mod metrics;
pub mod runtime;
pub mod shutdown;
pub mod telemetry;
