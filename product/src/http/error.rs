//! The errors only the product service answers; the common ones (bad
//! input, overload, a dependency down, …) are [`http_api::ApiError`]'s.

use http_api::{HttpError, ServiceError};

#[derive(Debug, thiserror::Error)]
pub enum ProductError {
    #[error("no product {0}")]
    NotFound(String),
    #[error("stock would leave 0 to 1000000000 (it is {stock})")]
    StockOutOfRange { stock: i64 },
}

impl HttpError for ProductError {
    fn status_code(&self) -> u16 {
        match self {
            ProductError::NotFound(_) => 404,
            ProductError::StockOutOfRange { .. } => 422,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ProductError::NotFound(_) => "product_not_found",
            ProductError::StockOutOfRange { .. } => "insufficient_stock",
        }
    }
}

impl ServiceError for ProductError {}
