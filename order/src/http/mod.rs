//! The order service's HTTP layer: routing, request parsing, handlers.
//! Handlers run as `may` coroutines; placing an order parks on the
//! group-commit writer's reply, reads go through the bridge.

mod error;
mod orders;

use std::sync::Arc;

use outbox::metrics::ConsumerMetrics;
use service::bridge::Bridge;
use service::http::{HttpError, Request, Response, Service, ops};
use service::metrics::Metrics;

pub use error::ApiError;

use crate::catalog::Catalog;
use crate::store::OrderStore;
use crate::store::writer::WriterHandle;

/// What handlers share.
pub struct AppState {
    pub bridge: Bridge,
    pub store: OrderStore,
    pub writer: WriterHandle,
    pub catalog: Catalog,
    pub metrics: Metrics,
    pub consumer_metrics: ConsumerMetrics,
    /// The queue whose subscription readiness reports.
    pub stock_replies_queue: String,
    /// Longest a request waits for its commit.
    pub request_timeout: std::time::Duration,
}

pub struct OrderApi {
    state: Arc<AppState>,
}

impl OrderApi {
    pub fn new(state: Arc<AppState>) -> Self {
        OrderApi { state }
    }

    fn route(&self, request: &Request) -> (&'static str, Result<Response, ApiError>) {
        let path = request.path();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let state = &self.state;
        match (segments.as_slice(), request.method()) {
            (["orders"], "POST") => ("/orders", orders::place(state, request)),
            (["orders"], "GET") => ("/orders", orders::list(state, request)),
            (["orders"], _) => ("/orders", Err(ApiError::MethodNotAllowed("GET, POST"))),
            (["orders", id], "GET") => ("/orders/:id", orders::get(state, id)),
            (["orders", _], _) => ("/orders/:id", Err(ApiError::MethodNotAllowed("GET"))),
            (["healthz"], "GET") => ("/healthz", Ok(ops::liveness())),
            (["readyz"], "GET") => ("/readyz", Ok(self.readiness())),
            (["metrics"], "GET") => ("/metrics", Ok(ops::metrics(&state.metrics))),
            (["openapi.json"], "GET") => ("/openapi.json", Ok(crate::openapi::response())),
            (["healthz" | "readyz" | "metrics" | "openapi.json"], _) => {
                ("ops", Err(ApiError::MethodNotAllowed("GET")))
            }
            _ => ("unmatched", Err(ApiError::RouteNotFound(path.to_owned()))),
        }
    }

    fn readiness(&self) -> Response {
        let store = self.state.store.clone();
        let database = self
            .state
            .bridge
            .run(async move { store.ping().await })
            .unwrap_or(false);
        let broker = self
            .state
            .consumer_metrics
            .connected
            .with_label_values(&[&self.state.stock_replies_queue])
            .get()
            == 1;
        ops::readiness(
            &[("postgres", database, true), ("rabbitmq", broker, false)],
            &outbox::broker::connections(),
        )
    }
}

impl Service for OrderApi {
    fn call(&self, request: Request) -> Response {
        let (route, result) = self.route(&request);
        result
            .unwrap_or_else(|error| error.to_response())
            .with_route(route)
    }
}
