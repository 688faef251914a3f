//! The order service's HTTP layer: its routes and handlers, and its own
//! errors. Handlers run as `may` coroutines; placing an order parks on the
//! group-commit writer's reply, reads go through the bridge. The
//! operational routes (`/healthz`, `/readyz`, `/metrics`,
//! `/openapi.json`) are the same in both services: [`http_api::ops`].

mod error;
mod orders;

use http_api::auth::Scope;
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

/// Who may place orders, which then belong to the caller.
const PLACE: &[Scope] = &[Scope::OrdersPlace];
/// Who may read orders: one's own, or every one (support staff).
const READ: &[Scope] = &[Scope::OrdersRead, Scope::OrdersReadAll];

/// The order API's own routes.
impl Routes for AppState {
    const ROUTES: &'static [Route<Self>] = &[
        Route::scoped("GET", "/orders", READ, orders::list),
        Route::scoped("POST", "/orders", PLACE, orders::place),
        Route::scoped("GET", "/orders/:id", READ, orders::get),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_description_names_each_routes_scopes() {
        let mismatches = http_api::router::scope_mismatches::<AppState>(crate::openapi::DOCUMENT);
        assert!(mismatches.is_empty(), "{mismatches:#?}");
    }
}
