//! The product service's HTTP layer: its routes and handlers, and its own
//! errors. Handlers run as `may` coroutines and reach the stores through
//! the bridge. The operational routes (`/healthz`, `/readyz` with Redis
//! required, `/metrics`, `/openapi.json`) are the same in both services:
//! [`http_api::ops`].

mod error;
mod products;

use http_api::auth::Scope;
use http_api::bridge::Bridge;
use http_api::ops::StoreProbe;
use http_api::router::{Route, Routes};

pub use error::ProductError;

use crate::cache::ProductCache;
use crate::store::ProductStore;

/// What handlers share.
pub struct AppState {
    pub bridge: Bridge,
    pub store: ProductStore,
    pub cache: ProductCache,
}

/// Who may change the catalog: reading it is public (the order service's
/// lookups of a product carry no token).
const WRITE: &[Scope] = &[Scope::CatalogWrite];

/// The product API's own routes.
impl Routes for AppState {
    const ROUTES: &'static [Route<Self>] = &[
        Route::public("GET", "/products", products::list),
        Route::scoped("POST", "/products", WRITE, products::create),
        Route::public("GET", "/products/:id", products::get),
        Route::scoped("PUT", "/products/:id", WRITE, products::replace),
        Route::scoped("PATCH", "/products/:id", WRITE, products::patch),
        Route::scoped("DELETE", "/products/:id", WRITE, products::delete),
        Route::scoped("POST", "/products/:id/stock", WRITE, products::adjust_stock),
    ];

    /// The cache and the live stock counters are in Redis: writes need it.
    fn required_stores(&self) -> Vec<(&'static str, StoreProbe)> {
        let cache = self.cache.clone();
        vec![("redis", Box::pin(async move { cache.ping().await }))]
    }
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
