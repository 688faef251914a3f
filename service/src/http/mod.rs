//! The HTTP/1.1 core both services serve from.
//!
//! - [`codec`]: bytes to [`Request`]s within [`Limits`], or a rejection.
//! - `chunked`: the chunked transfer-coding decoder.
//! - [`server`]: accept loop and connection coroutines on `may`.
//! - [`request`] and [`response`]: the two types a [`Service`] sees, and the
//!   JSON error body.
//! - [`error`]: the one place a service's error becomes an answer.
//! - [`query`]: query-string parameters.
//! - [`ops`]: `/healthz`, `/readyz` and `/metrics`, the same in every service.

mod chunked;
pub mod codec;
pub mod error;
pub mod ops;
pub mod query;
pub mod request;
pub mod response;
pub mod server;

pub use codec::Limits;
pub use error::HttpError;
pub use request::Request;
pub use response::{Connection, Response};
pub use server::{Server, ServerOptions, Service};
