//! The HTTP side of the two services: what they serve their APIs with.
//! The `outbox` library and the standalone relay do without it; it builds
//! on `platform` (settings, database, metrics).
//!
//! Why the HTTP core is ours and not may_minihttp's connection loop is told
//! once, in docs/ARCHITECTURE.md ("The HTTP core").
//!
//! # Layout
//! The HTTP/1.1 core on `may` coroutines:
//! - [`server`]: accept loop and connection coroutines, with the guards the
//!   request path needs (bounded heads and bodies, timeouts, panics
//!   answered with 500), and the drain on shutdown.
//! - [`codec`] (with `chunked`): bytes to [`Request`]s within [`Limits`],
//!   or a rejection.
//! - [`request`] and [`response`]: the two types a [`Service`] sees.
//! - [`metrics`]: requests by route and status, latency by route.
//!
//! What both APIs do the same way:
//! - [`auth`]: who may call what: bearer tokens checked against the
//!   issuer's keys, scopes per route, limits per caller.
//! - [`error`]: the common errors and the one place an error becomes an
//!   answer, with the JSON error body.
//! - [`json`]: reading request bodies field by field (400 versus 422).
//! - [`query`] and [`paging`]: query parameters, and lists a page at a time.
//! - [`router`]: a service's route table, matched by method and pattern,
//!   with 405 and 404 answered alike.
//! - [`ops`]: `/healthz`, `/readyz`, `/metrics`, `/openapi.json` around a
//!   service's own routes.
//!
//! Running a service:
//! - [`bridge`]: how a coroutine hands work to the tokio runtime and parks
//!   until the answer comes, without blocking a worker thread; the
//!   deadlines of those waits are kept by one thread.
//! - [`lifecycle`]: HTTP settings, binding the server, keeping the
//!   workers, and draining both in order on shutdown.
//! - [`runtime`]: starting the may workers and the tokio runtime.

pub mod auth;
pub mod bridge;
mod chunked;
pub mod codec;
pub mod error;
pub mod json;
pub mod lifecycle;
pub mod metrics;
pub mod ops;
pub mod paging;
pub mod query;
pub mod request;
pub mod response;
pub mod router;
pub mod runtime;
pub mod server;

pub use codec::Limits;
pub use error::{ApiError, HttpError, ServiceError};
pub use request::Request;
pub use response::{Connection, Response};
pub use server::{Server, ServerOptions, Service};
