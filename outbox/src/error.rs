//! The outbox library's error type.

use platform::db::StoreError;

/// What can fail in the outbox library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {}", platform::db::explain(.0))]
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
            Error::Postgres(error) => platform::db::is_transient(error),
            Error::Pool(_) | Error::Broker(_) | Error::Unavailable(_) => true,
            Error::Refused(_) | Error::Json(_) | Error::Invalid(_) => false,
        }
    }

    /// Whether the input itself is at fault (a value out of range or of the
    /// wrong kind, a broken constraint, JSON that does not fit): the same
    /// input fails again wherever it runs, so it can be set aside. An
    /// outage or a bug of the code (a missing column, a permission) is not:
    /// what failed on it is retried, never thrown away.
    pub fn is_in_the_data(&self) -> bool {
        match self {
            Error::Postgres(error) => error
                .code()
                .is_some_and(|code| matches!(&code.code()[..2], "22" | "23")),
            Error::Json(_) | Error::Invalid(_) => true,
            Error::Pool(_) | Error::Broker(_) | Error::Unavailable(_) | Error::Refused(_) => false,
        }
    }

    /// Whether the error came from the broker (the session is lost) rather
    /// than from the store or the handler.
    pub fn is_broker(&self) -> bool {
        matches!(self, Error::Broker(_) | Error::Refused(_))
    }
}

/// A service's store error, as the outbox library reports it (a consumer
/// handler's store call, say): an unreachable store stays transient, a
/// refused value stays in the data.
impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable { .. } => Error::Unavailable(error.to_string()),
            StoreError::Constraint(_) | StoreError::Invalid(_) => Error::Invalid(error.to_string()),
            StoreError::Database(error) => Error::Postgres(error),
        }
    }
}

/// What a service's store makes of an outbox error (appending its events
/// in its own transaction).
impl From<Error> for StoreError {
    fn from(error: Error) -> Self {
        match error {
            Error::Postgres(error) => error.into(),
            Error::Pool(error) => error.into(),
            Error::Unavailable(_) => StoreError::database_unavailable(error),
            Error::Broker(_) | Error::Refused(_) => StoreError::Unavailable {
                store: "the broker",
                cause: error.to_string(),
            },
            Error::Json(_) | Error::Invalid(_) => StoreError::Invalid(error.to_string()),
        }
    }
}

/// The outbox library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
