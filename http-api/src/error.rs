//! The one place an error becomes an HTTP answer. [`ApiError`] holds the
//! answers both services give the same way (a malformed body, an unknown
//! route, overload, a dependency down); a service adds its own (an unknown
//! order, stock out of range) as a [`ServiceError`]. Each says its status
//! and stable code; [`HttpError::to_response`] turns it into the design's
//! body `{"error":{"code":…,"message":…}}`.

use platform::db::StoreError;

use crate::Response;
use crate::auth::AuthError;
use crate::bridge::BridgeError;
use crate::json::InputError;
use crate::request::InvalidIdempotencyKey;

/// What an error tells the HTTP layer.
pub trait HttpError: std::fmt::Display + std::fmt::Debug {
    fn status_code(&self) -> u16;

    /// Stable and machine-readable (`invalid_price`), unlike the message.
    fn code(&self) -> &'static str;

    /// The `Allow` header of a 405.
    fn allow(&self) -> Option<&str> {
        None
    }

    /// The `Location` of what the error is about, if it names something
    /// the client can look up.
    fn location(&self) -> Option<String> {
        None
    }

    /// The `WWW-Authenticate` challenge of a refused caller (RFC 6750).
    fn challenge(&self) -> Option<String> {
        None
    }

    /// Seconds to wait before retrying: a 503 says 1, a 429 its own.
    fn retry_after(&self) -> Option<u64> {
        (self.status_code() == 503).then_some(1)
    }

    /// A 5xx other than 503 logs its cause and shows the client none of
    /// it; a 503 or a 429 says when to retry; a 405 says what is allowed;
    /// a refused caller gets a challenge.
    fn to_response(&self) -> Response {
        let status = self.status_code();
        if status >= 500 && status != 503 {
            tracing::error!(cause = %self, "request failed");
            return Response::error(status, self.code(), "internal error");
        }
        let response = Response::error(status, self.code(), &self.to_string());
        let response = match self.allow() {
            Some(allow) => response.with_header("Allow", allow),
            None => response,
        };
        let response = match self.location() {
            Some(location) => response.with_header("Location", location),
            None => response,
        };
        let response = match self.challenge() {
            Some(challenge) => response.with_header("WWW-Authenticate", challenge),
            None => response,
        };
        match self.retry_after() {
            Some(seconds) => response.with_header("Retry-After", seconds.to_string()),
            None => response,
        }
    }
}

/// An error only one service answers (its resource not found, a rule of
/// its own); `?` turns it into an [`ApiError`].
pub trait ServiceError: HttpError + Send + Sync + 'static {}

/// Every error a handler returns.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("no route {0}")]
    RouteNotFound(String),
    #[error("method not allowed; allowed: {0}")]
    MethodNotAllowed(String),
    #[error("the body must be application/json")]
    UnsupportedMediaType,
    #[error("{0}")]
    BadQuery(String),
    #[error("Idempotency-Key is 1 to 200 visible ASCII characters")]
    InvalidIdempotencyKey,
    #[error("an Idempotency-Key header is required")]
    MissingIdempotencyKey,
    #[error("this Idempotency-Key was used with another request")]
    IdempotencyKeyReused,
    #[error("too many requests in flight; retry shortly")]
    Overloaded,
    #[error("{0} is unavailable")]
    Unavailable(&'static str),
    #[error("internal error: {0}")]
    Internal(String),
    /// The caller is not known, not allowed, or over its limit.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// One of a service's own errors.
    #[error("{0}")]
    Service(Box<dyn HttpError + Send + Sync>),
}

impl HttpError for ApiError {
    fn status_code(&self) -> u16 {
        match self {
            ApiError::Input(input) => input.status_code(),
            ApiError::RouteNotFound(_) => 404,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::UnsupportedMediaType => 415,
            ApiError::BadQuery(_)
            | ApiError::InvalidIdempotencyKey
            | ApiError::MissingIdempotencyKey => 400,
            ApiError::IdempotencyKeyReused => 422,
            ApiError::Overloaded | ApiError::Unavailable(_) => 503,
            ApiError::Internal(_) => 500,
            ApiError::Auth(error) => error.status_code(),
            ApiError::Service(error) => error.status_code(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Input(input) => input.code(),
            ApiError::RouteNotFound(_) => "route_not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::BadQuery(_) => "invalid_query",
            ApiError::InvalidIdempotencyKey => "invalid_idempotency_key",
            ApiError::MissingIdempotencyKey => "missing_idempotency_key",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::Overloaded => "overloaded",
            ApiError::Unavailable(_) => "dependency_unavailable",
            ApiError::Internal(_) => "internal",
            ApiError::Auth(error) => error.code(),
            ApiError::Service(error) => error.code(),
        }
    }

    fn allow(&self) -> Option<&str> {
        match self {
            ApiError::MethodNotAllowed(allow) => Some(allow),
            ApiError::Service(error) => error.allow(),
            _ => None,
        }
    }

    fn location(&self) -> Option<String> {
        match self {
            ApiError::Service(error) => error.location(),
            _ => None,
        }
    }

    fn challenge(&self) -> Option<String> {
        match self {
            ApiError::Auth(error) => error.challenge(),
            ApiError::Service(error) => error.challenge(),
            _ => None,
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Auth(error) => error.retry_after(),
            ApiError::Service(error) => error.retry_after(),
            _ => (self.status_code() == 503).then_some(1),
        }
    }
}

impl<E: ServiceError> From<E> for ApiError {
    fn from(error: E) -> Self {
        ApiError::Service(Box::new(error))
    }
}

impl From<InvalidIdempotencyKey> for ApiError {
    fn from(_: InvalidIdempotencyKey) -> Self {
        ApiError::InvalidIdempotencyKey
    }
}

impl From<BridgeError> for ApiError {
    fn from(error: BridgeError) -> Self {
        match error {
            BridgeError::Overloaded => ApiError::Overloaded,
            BridgeError::TimedOut => ApiError::Unavailable("a dependency (no answer in time)"),
            BridgeError::Lost => {
                ApiError::Internal("a request task ended without an answer".into())
            }
        }
    }
}

/// A store that could not be reached is a 503 naming it (logged as a
/// warning); anything else a store refuses is a bug of ours (500).
impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable { store, cause } => {
                tracing::warn!(%cause, "{store} unavailable");
                ApiError::Unavailable(store)
            }
            StoreError::Constraint(name) => {
                ApiError::Internal(format!("constraint {name} refused a validated value"))
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    enum Failure {
        Secret,
        Busy,
        Method,
    }

    impl std::fmt::Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("password=hunter2")
        }
    }

    impl HttpError for Failure {
        fn status_code(&self) -> u16 {
            match self {
                Failure::Secret => 500,
                Failure::Busy => 503,
                Failure::Method => 405,
            }
        }
        fn code(&self) -> &'static str {
            "code"
        }
        fn allow(&self) -> Option<&str> {
            matches!(self, Failure::Method).then_some("GET, POST")
        }
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let response = Failure::Secret.to_response();
        assert_eq!(response.status(), 500);
        assert!(!String::from_utf8_lossy(response.body()).contains("hunter2"));
    }

    #[test]
    fn overload_asks_to_retry_and_405_says_what_is_allowed() {
        assert_eq!(Failure::Busy.to_response().header("Retry-After"), Some("1"));
        assert_eq!(
            Failure::Method.to_response().header("Allow"),
            Some("GET, POST")
        );
    }

    impl ServiceError for Failure {}

    #[test]
    fn a_services_own_error_keeps_its_status_code_and_headers() {
        let error = ApiError::from(Failure::Method);
        assert_eq!((error.status_code(), error.code()), (405, "code"));
        assert_eq!(error.to_response().header("Allow"), Some("GET, POST"));
    }

    #[test]
    fn an_unreachable_store_is_a_503_naming_it_and_a_refusal_a_500() {
        let down = ApiError::from(StoreError::Unavailable {
            store: "the cache (Redis)",
            cause: "connection refused".into(),
        });
        let response = down.to_response();
        assert_eq!(response.status(), 503);
        assert!(
            String::from_utf8_lossy(response.body()).contains("the cache (Redis) is unavailable")
        );
        let refused = ApiError::from(StoreError::Constraint("products_price_range".into()));
        assert_eq!(refused.status_code(), 500);
    }
}
