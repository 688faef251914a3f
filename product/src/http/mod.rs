//! The product service's HTTP layer: routing, request parsing, and the
//! handlers. Handlers run as `may` coroutines and reach the stores through
//! the bridge.

mod error;
mod products;

use std::sync::Arc;

use outbox::metrics::ConsumerMetrics;
use service::bridge::Bridge;
use service::http::{HttpError, Request, Response, Service, ops};
use service::metrics::Metrics;

pub use error::ApiError;

use crate::cache::ProductCache;
use crate::store::ProductStore;

/// What handlers share.
pub struct AppState {
    pub bridge: Bridge,
    pub store: ProductStore,
    pub cache: ProductCache,
    pub metrics: Metrics,
    pub consumer_metrics: ConsumerMetrics,
    /// The queue whose subscription readiness reports.
    pub order_created_queue: String,
}

/// The router.
pub struct ProductApi {
    state: Arc<AppState>,
}

impl ProductApi {
    pub fn new(state: Arc<AppState>) -> Self {
        ProductApi { state }
    }

    fn route(&self, request: &Request) -> (&'static str, Result<Response, ApiError>) {
        let path = request.path();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let method = request.method();
        let state = &self.state;
        match (segments.as_slice(), method) {
            (["products"], "POST") => ("/products", products::create(state, request)),
            (["products"], "GET") => ("/products", products::list(state, request)),
            (["products"], _) => ("/products", Err(ApiError::MethodNotAllowed("GET, POST"))),
            (["products", id], "GET") => ("/products/:id", products::get(state, id)),
            (["products", id], "PUT") => ("/products/:id", products::replace(state, id, request)),
            (["products", id], "PATCH") => ("/products/:id", products::patch(state, id, request)),
            (["products", id], "DELETE") => ("/products/:id", products::delete(state, id)),
            (["products", _], _) => (
                "/products/:id",
                Err(ApiError::MethodNotAllowed("GET, PUT, PATCH, DELETE")),
            ),
            (["products", id, "stock"], "POST") => (
                "/products/:id/stock",
                products::adjust_stock(state, id, request),
            ),
            (["products", _, "stock"], _) => (
                "/products/:id/stock",
                Err(ApiError::MethodNotAllowed("POST")),
            ),
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
        let state = self.state.clone();
        let checks = self.state.bridge.run(async move {
            let (database, redis) = tokio::join!(state.store.ping(), state.cache.ping());
            (database, redis)
        });
        let (database, redis) = checks.unwrap_or((false, false));
        let broker = self
            .state
            .consumer_metrics
            .connected
            .with_label_values(&[&self.state.order_created_queue])
            .get()
            == 1;
        ops::readiness(
            &[
                ("postgres", database, true),
                ("redis", redis, true),
                ("rabbitmq", broker, false),
            ],
            &outbox::broker::connections(),
        )
    }
}

impl Service for ProductApi {
    fn call(&self, request: Request) -> Response {
        let (route, result) = self.route(&request);
        result
            .unwrap_or_else(|error| error.to_response())
            .with_route(route)
    }
}
