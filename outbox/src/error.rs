//! The outbox library's error type.

/// What can fail in the outbox library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("broker refused the message: {0}")]
    Refused(String),
    #[error("message encoding: {0}")]
    Json(#[from] serde_json::Error),
    /// A dependency could not be reached; retrying later may succeed.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Whether retrying later may succeed (the store or broker was
    /// unreachable), as opposed to an error in the data itself.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Postgres(error) => is_transient_postgres(error),
            Error::Pool(_) | Error::Broker(_) | Error::Unavailable(_) => true,
            Error::Refused(_) | Error::Json(_) | Error::Invalid(_) => false,
        }
    }
}

/// Connection loss, shutdown, serialization failures and deadlocks are
/// transient; constraint violations and bad data (SQLSTATE classes 22 and
/// 23) are not.
pub fn is_transient_postgres(error: &tokio_postgres::Error) -> bool {
    match error.code() {
        None => true,
        Some(code) => {
            let class = &code.code()[..2];
            !matches!(class, "22" | "23" | "42")
        }
    }
}

/// The outbox library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
