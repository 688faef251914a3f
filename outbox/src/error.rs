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

/// Whether a PostgreSQL error may go away by itself: the connection was
/// lost or refused (SQLSTATE class 08, or no SQLSTATE and an I/O cause),
/// the transaction lost a race (40: serialization failure, deadlock), the
/// server is short of resources or shutting down (53, 57, 58), or a lock
/// was not available (55). Everything else (bad data, constraint
/// violations, a parameter that cannot be encoded) will fail again.
pub fn is_transient_postgres(error: &tokio_postgres::Error) -> bool {
    if let Some(code) = error.code() {
        return matches!(&code.code()[..2], "08" | "40" | "53" | "55" | "57" | "58");
    }
    error.is_closed()
        || std::error::Error::source(error).is_some_and(|cause| cause.is::<std::io::Error>())
}

/// The outbox library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
