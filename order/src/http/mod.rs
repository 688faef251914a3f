//! The order service's HTTP layer: its routes and handlers, and its own
//! errors. Handlers run as `may` coroutines; placing an order parks on the
//! group-commit writer's reply, reads go through the bridge. The
//! operational routes (`/healthz`, `/readyz`, `/metrics`,
//! `/openapi.json`) are the same in both services: [`http_api::ops`].

mod error;
mod orders;

use http_api::bridge::Bridge;
use http_api::router::{Route, Routes};

pub use error::OrderError;

use crate::catalog::Catalog;
use crate::store::OrderStore;
use crate::store::writer::WriterHandle;

/// What handlers share.
pub struct AppState {
    pub bridge: Bridge,
    pub store: OrderStore,
    pub writer: WriterHandle,
    pub catalog: Catalog,
    /// Longest a request waits for its commit.
    pub request_timeout: std::time::Duration,
}

/// The order API's own routes.
impl Routes for AppState {
    const ROUTES: &'static [Route<Self>] = &[
        Route::new("GET", "/orders", orders::list),
        Route::new("POST", "/orders", orders::place),
        Route::new("GET", "/orders/:id", orders::get),
    ];
}
