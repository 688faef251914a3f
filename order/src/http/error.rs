//! The errors only the order service answers; the common ones (bad input,
//! overload, a dependency down, …) are [`http_api::ApiError`]'s.

use http_api::{ApiError, HttpError, ServiceError};

use crate::store::writer::PlaceError;

#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("no order {0}")]
    NotFound(String),
    #[error("product {0} does not exist")]
    UnknownProduct(i64),
    /// The connection to the database died while the order's commit was
    /// in flight, and the lookup that would settle it failed too.
    #[error("order {0} may or may not have been placed: GET /orders/{0} tells")]
    OutcomeUnknown(uuid::Uuid),
}

impl HttpError for OrderError {
    fn status_code(&self) -> u16 {
        match self {
            OrderError::NotFound(_) => 404,
            OrderError::UnknownProduct(_) => 422,
            OrderError::OutcomeUnknown(_) => 503,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            OrderError::NotFound(_) => "order_not_found",
            OrderError::UnknownProduct(_) => "unknown_product",
            OrderError::OutcomeUnknown(_) => "outcome_unknown",
        }
    }

    fn location(&self) -> Option<String> {
        match self {
            OrderError::OutcomeUnknown(id) => Some(format!("/orders/{id}")),
            _ => None,
        }
    }
}

impl ServiceError for OrderError {}

impl From<PlaceError> for ApiError {
    fn from(error: PlaceError) -> Self {
        match error {
            PlaceError::UnknownProduct(id) => OrderError::UnknownProduct(id).into(),
            PlaceError::KeyReused => ApiError::IdempotencyKeyReused,
            PlaceError::Unavailable(cause) => {
                tracing::warn!(%cause, "order not placed");
                ApiError::Unavailable(platform::db::StoreError::DATABASE)
            }
            PlaceError::OutcomeUnknown(id) => OrderError::OutcomeUnknown(id).into(),
            PlaceError::ReplicaMiss(ids) => {
                ApiError::Internal(format!("products {ids:?} still unknown to the replica"))
            }
            PlaceError::Internal(cause) => ApiError::Internal(cause),
        }
    }
}
