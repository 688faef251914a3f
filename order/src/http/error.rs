//! The order service's errors and the one place they become HTTP answers.
//! A 500 logs its cause and shows the client none of it.

use service::bridge::BridgeError;
use service::http::HttpError;

use crate::domain::InputError;
use crate::store::StoreError;
use crate::store::writer::PlaceError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Input(#[from] InputError),
    #[error("no order {0}")]
    OrderNotFound(String),
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
    #[error("product {0} does not exist")]
    UnknownProduct(i64),
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error("too many orders in flight; retry shortly")]
    Overloaded,
    #[error("{0} is unavailable")]
    Unavailable(&'static str),
    /// The connection to the database died while the order's commit was
    /// in flight, and the lookup that would settle it failed too.
    #[error("order {0} may or may not have been placed: GET /orders/{0} tells")]
    OutcomeUnknown(uuid::Uuid),
    #[error("internal error: {0}")]
    Internal(String),
}

impl HttpError for ApiError {
    fn status_code(&self) -> u16 {
        match self {
            ApiError::Input(InputError::Body(body)) if body.is_malformed() => 400,
            ApiError::Input(_) => 422,
            ApiError::OrderNotFound(_) | ApiError::RouteNotFound(_) => 404,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::UnsupportedMediaType => 415,
            ApiError::BadQuery(_) | ApiError::InvalidIdempotencyKey => 400,
            ApiError::UnknownProduct(_) | ApiError::IdempotencyKeyReused => 422,
            ApiError::Overloaded | ApiError::Unavailable(_) | ApiError::OutcomeUnknown(_) => 503,
            ApiError::Internal(_) => 500,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::Input(InputError::Invalid { code, .. }) => code,
            ApiError::Input(InputError::Body(body)) if body.is_malformed() => "malformed_body",
            ApiError::Input(InputError::Body(_)) => "invalid_value",
            ApiError::OrderNotFound(_) => "order_not_found",
            ApiError::RouteNotFound(_) => "route_not_found",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::BadQuery(_) => "invalid_query",
            ApiError::InvalidIdempotencyKey => "invalid_idempotency_key",
            ApiError::UnknownProduct(_) => "unknown_product",
            ApiError::IdempotencyKeyReused => "idempotency_key_reused",
            ApiError::Overloaded => "overloaded",
            ApiError::Unavailable(_) => "dependency_unavailable",
            ApiError::OutcomeUnknown(_) => "outcome_unknown",
            ApiError::Internal(_) => "internal",
        }
    }

    fn allow(&self) -> Option<&'static str> {
        match self {
            ApiError::MethodNotAllowed(allow) => Some(allow),
            _ => None,
        }
    }

    fn location(&self) -> Option<String> {
        match self {
            ApiError::OutcomeUnknown(id) => Some(format!("/orders/{id}")),
            _ => None,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if error.is_transient() {
            tracing::warn!(%error, "database unavailable");
            ApiError::Unavailable("the database")
        } else {
            ApiError::Internal(error.to_string())
        }
    }
}

impl From<PlaceError> for ApiError {
    fn from(error: PlaceError) -> Self {
        match error {
            PlaceError::UnknownProduct(id) => ApiError::UnknownProduct(id),
            PlaceError::KeyReused => ApiError::IdempotencyKeyReused,
            PlaceError::Unavailable(cause) => {
                tracing::warn!(%cause, "order not placed");
                ApiError::Unavailable("the database")
            }
            PlaceError::OutcomeUnknown(id) => ApiError::OutcomeUnknown(id),
            PlaceError::ReplicaMiss(ids) => {
                ApiError::Internal(format!("products {ids:?} still unknown to the replica"))
            }
            PlaceError::Internal(cause) => ApiError::Internal(cause),
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
