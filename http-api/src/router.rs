//! Routing: a service's routes as a table ([`Route`]s of its [`Routes`]),
//! matched by method and path pattern, with the operational routes
//! ([`crate::ops`]) around them. A path that matches a pattern but not its
//! method is a 405 naming the methods the table has for it; a path no
//! pattern matches is a 404. A route is public or names the scopes it
//! needs: the caller is authorized ([`crate::auth`]) before its handler
//! runs, and the handler is given the caller.

use crate::auth::{Authenticator, Caller, Scope};
use crate::error::{ApiError, HttpError};
use crate::ops::{Ops, Routed, StoreProbe};
use crate::server::Service;
use crate::{Request, Response};

/// A public route's handler: the service's state, the request, and the
/// path segment the pattern's `:id` matched (empty for a pattern without
/// one).
pub type PublicHandler<S> = fn(&S, &Request, &str) -> Result<Response, ApiError>;

/// The handler of a route that needs a scope: as a public one, with the
/// caller the token names.
pub type ScopedHandler<S> = fn(&S, &Request, &Caller, &str) -> Result<Response, ApiError>;

/// Who may call a route, and its handler.
enum Handler<S> {
    Public(PublicHandler<S>),
    /// Any one of the scopes lets a caller in.
    Scoped(&'static [Scope], ScopedHandler<S>),
}

/// One line of a service's route table.
pub struct Route<S> {
    method: &'static str,
    /// `/products/:id/stock`; also the route's label in the metrics.
    pattern: &'static str,
    handler: Handler<S>,
}

impl<S> Route<S> {
    /// A route anyone may call.
    pub const fn public(
        method: &'static str,
        pattern: &'static str,
        handler: PublicHandler<S>,
    ) -> Self {
        Route {
            method,
            pattern,
            handler: Handler::Public(handler),
        }
    }

    /// A route for callers whose token grants one of `scopes`.
    pub const fn scoped(
        method: &'static str,
        pattern: &'static str,
        scopes: &'static [Scope],
        handler: ScopedHandler<S>,
    ) -> Self {
        Route {
            method,
            pattern,
            handler: Handler::Scoped(scopes, handler),
        }
    }

    /// The scopes the route needs; `None` for a public one.
    pub fn scopes(&self) -> Option<&'static [Scope]> {
        match self.handler {
            Handler::Public(_) => None,
            Handler::Scoped(scopes, _) => Some(scopes),
        }
    }

    fn call(
        &self,
        state: &S,
        auth: &Authenticator,
        request: &Request,
        id: &str,
    ) -> Result<Response, ApiError> {
        match self.handler {
            Handler::Public(handler) => handler(state, request, id),
            Handler::Scoped(scopes, handler) => {
                let caller = auth.authorize(request, scopes)?;
                handler(state, request, &caller, id)
            }
        }
    }

    /// The `:id` segment when `segments` fit the pattern (`""` when the
    /// pattern has none); `None` when they do not.
    fn matches<'a>(&self, segments: &[&'a str]) -> Option<&'a str> {
        let mut pattern = self.pattern.trim_start_matches('/').split('/');
        let mut id = "";
        for have in segments {
            let want = pattern.next()?;
            if want.starts_with(':') {
                id = have;
            } else if want != *have {
                return None;
            }
        }
        pattern.next().is_none().then_some(id)
    }
}

/// What a service's state serves: its route table, and the stores it needs.
pub trait Routes: Send + Sync + Sized + 'static {
    /// The service's routes; a path's methods are listed in `Allow` in
    /// this order.
    const ROUTES: &'static [Route<Self>];

    /// Stores besides PostgreSQL without which the service is not ready,
    /// each with its probe.
    fn required_stores(&self) -> Vec<(&'static str, StoreProbe)> {
        Vec::new()
    }
}

/// Where an OpenAPI description (JSON) and a route table disagree on who
/// may call what: each scoped route's operation must list the same scopes
/// under `x-required-scopes` and name the bearer scheme; each public one
/// neither. Empty when they agree (each service's unit tests ask).
pub fn scope_mismatches<S: Routes>(openapi: &str) -> Vec<String> {
    let Ok(document) = serde_json::from_str::<serde_json::Value>(openapi) else {
        return vec!["the description is not JSON".into()];
    };
    let mut mismatches = Vec::new();
    for route in S::ROUTES {
        let path: Vec<String> = route
            .pattern
            .split('/')
            .map(|part| match part.strip_prefix(':') {
                Some(name) => format!("{{{name}}}"),
                None => part.to_owned(),
            })
            .collect();
        let operation = &document["paths"][path.join("/")][route.method.to_ascii_lowercase()];
        let documented: Vec<&str> = operation["x-required-scopes"]
            .as_array()
            .map(|names| names.iter().filter_map(|name| name.as_str()).collect())
            .unwrap_or_default();
        let bearer = operation["security"]
            .as_array()
            .is_some_and(|schemes| schemes.iter().any(|scheme| scheme.get("bearer").is_some()));
        let needed: Vec<&str> = route
            .scopes()
            .unwrap_or_default()
            .iter()
            .map(|scope| scope.name())
            .collect();
        if documented != needed || bearer != route.scopes().is_some() {
            mismatches.push(format!(
                "{} {}: the table needs {needed:?}, the description says {documented:?} (bearer: {bearer})",
                route.method, route.pattern
            ));
        }
    }
    mismatches
}

/// A service's routes and the operational ones, as the server calls them.
pub struct Api<S> {
    state: S,
    ops: Ops,
    auth: Authenticator,
}

impl<S: Routes> Api<S> {
    pub fn new(state: S, ops: Ops, auth: Authenticator) -> Self {
        Api { state, ops, auth }
    }

    /// The route label and answer of the service's own routes, if the path
    /// is one of theirs.
    fn own(&self, segments: &[&str], request: &Request) -> Option<Routed> {
        let mut allowed: Vec<&str> = Vec::new();
        let mut label = None;
        for route in S::ROUTES {
            let Some(id) = route.matches(segments) else {
                continue;
            };
            if route.method == request.method() {
                let answer = route.call(&self.state, &self.auth, request, id);
                return Some((route.pattern, answer));
            }
            label.get_or_insert(route.pattern);
            allowed.push(route.method);
        }
        let label = label?;
        Some((label, Err(ApiError::MethodNotAllowed(allowed.join(", ")))))
    }
}

impl<S: Routes> Service for Api<S> {
    fn call(&self, request: Request) -> Response {
        answer(&request, |segments| {
            self.own(segments, &request)
                .or_else(|| self.ops.public_route(segments, request.method()))
        })
    }
}

/// The admin listener's routes of a service: liveness, readiness with its
/// stores, metrics ([`crate::ops`]).
pub struct Admin<S>(pub std::sync::Arc<Api<S>>);

impl<S: Routes> Service for Admin<S> {
    fn call(&self, request: Request) -> Response {
        let api = &self.0;
        answer(&request, |segments| {
            api.ops
                .admin_route(segments, request.method(), || api.state.required_stores())
        })
    }
}

/// The answer of the route `routed` finds for the request's path, or 404.
fn answer(request: &Request, routed: impl FnOnce(&[&str]) -> Option<Routed>) -> Response {
    let path = request.path();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (route, result) = routed(&segments)
        .unwrap_or_else(|| ("unmatched", Err(ApiError::RouteNotFound(path.to_owned()))));
    result
        .unwrap_or_else(|error| error.to_response())
        .with_route(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(pattern: &'static str) -> Route<()> {
        Route::public("GET", pattern, |_, _, _| Ok(Response::empty(204)))
    }

    #[test]
    fn patterns_match_whole_paths_and_give_the_id() {
        let split =
            |path: &'static str| path.trim_start_matches('/').split('/').collect::<Vec<_>>();
        let item = pattern("/products/:id");
        assert_eq!(item.matches(&split("/products/42")), Some("42"));
        assert_eq!(item.matches(&split("/products")), None);
        assert_eq!(item.matches(&split("/products/42/stock")), None);
        assert_eq!(item.matches(&split("/orders/42")), None);
        let collection = pattern("/products");
        assert_eq!(collection.matches(&split("/products")), Some(""));
        assert_eq!(collection.matches(&split("/products/")), None);
    }
}
