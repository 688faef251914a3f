//! The product service's errors and the one place they become HTTP
//! answers. A 500 logs its cause and shows the client none of it.

use service::bridge::BridgeError;
use service::http::Response;

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
    #[error("this Idempotency-Key was used with another product or delta")]
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

impl ApiError {
    pub fn status_code(&self) -> u16 {
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

    pub fn into_response(self) -> Response {
        let status = self.status_code();
        if status == 500 {
            tracing::error!(cause = %self, "request failed");
            return Response::error(500, self.code(), "internal error");
        }
        let response = Response::error(status, self.code(), &self.to_string());
        match self {
            ApiError::MethodNotAllowed(allow) => response.with_header("Allow", allow),
            ApiError::Overloaded | ApiError::Unavailable(_) => {
                response.with_header("Retry-After", "1")
            }
            _ => response,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_cause() {
        let response = ApiError::Internal("password=hunter2".into()).into_response();
        assert_eq!(response.status(), 500);
        assert!(!String::from_utf8_lossy(response.body()).contains("hunter2"));
    }

    #[test]
    fn method_not_allowed_says_what_is() {
        let response = ApiError::MethodNotAllowed("GET, POST").into_response();
        assert_eq!(
            (response.status(), response.header("Allow")),
            (405, Some("GET, POST"))
        );
    }

    #[test]
    fn overload_asks_to_retry() {
        let response = ApiError::Overloaded.into_response();
        assert_eq!(
            (response.status(), response.header("Retry-After")),
            (503, Some("1"))
        );
    }
}
