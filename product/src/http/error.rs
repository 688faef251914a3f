//! The product service's errors and the one place they become HTTP
//! answers. A 500 logs its cause and shows the client none of it.

use service::bridge::BridgeError;
use service::http::HttpError;

use crate::domain::InputError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Input(#[from] InputError),
    #[error("no product {0}")]
    ProductNotFound(String),
    #[error("no route {0}")]
    RouteNotFound(String),
    #[error("method not allowed; allowed: {0}")]
    MethodNotAllowed(&'static str),
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
    #[error("stock would leave 0 to 1000000000 (it is {stock})")]
    StockOutOfRange { stock: i64 },
    #[error("too many requests in flight; retry shortly")]
    Overloaded,
    #[error("{0} is unavailable")]
    Unavailable(&'static str),
    #[error("internal error: {0}")]
    Internal(String),
}

impl HttpError for ApiError {
    fn status_code(&self) -> u16 {
        match self {
            ApiError::Input(InputError::Body(body)) if body.is_malformed() => 400,
            ApiError::Input(_) => 422,
            ApiError::ProductNotFound(_) | ApiError::RouteNotFound(_) => 404,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::UnsupportedMediaType => 415,
            ApiError::BadQuery(_)
            | ApiError::MissingIdempotencyKey
            | ApiError::InvalidIdempotencyKey => 400,
            ApiError::IdempotencyKeyReused | ApiError::StockOutOfRange { .. } => 422,
            ApiError::Overloaded | ApiError::Unavailable(_) => 503,
            ApiError::Internal(_) => 500,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Input(InputError::Invalid { code, .. }) => code,
            ApiError::Input(InputError::Body(body)) if body.is_malformed() => "malformed_body",
            ApiError::Input(InputError::Body(_)) => "invalid_value",
            ApiError::ProductNotFound(_) => "product_not_found",
            ApiError::RouteNotFound(_) => "route_not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::BadQuery(_) => "invalid_query",
            ApiError::InvalidIdempotencyKey => "invalid_idempotency_key",
            ApiError::MissingIdempotencyKey => "missing_idempotency_key",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::StockOutOfRange { .. } => "insufficient_stock",
            ApiError::Overloaded => "overloaded",
            ApiError::Unavailable(_) => "dependency_unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    fn allow(&self) -> Option<&'static str> {
        match self {
            ApiError::MethodNotAllowed(allow) => Some(allow),
            _ => None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(cause) => {
                tracing::warn!(%cause, "database unavailable");
                ApiError::Unavailable("the database")
            }
            StoreError::Constraint(name) => {
                ApiError::Internal(format!("constraint {name} refused a validated value"))
            }
            StoreError::Cache(cause) => {
                tracing::warn!(%cause, "cache unavailable; write rolled back");
                ApiError::Unavailable("the cache (Redis)")
            }
            other => ApiError::Internal(other.to_string()),
        }
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
