//! Why a statement or transaction did not go through, told apart the way
//! callers act on it: a store that could not be reached (retry later, 503)
//! or a refusal that will happen again (a bug of ours, or bad data).

use std::fmt::Display;

use tokio_postgres::error::SqlState;

/// Why a store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A store could not be reached: the database, or another store a write
    /// must reach before it commits (the write was rolled back). Worth
    /// retrying later.
    #[error("{store} unavailable: {cause}")]
    Unavailable { store: &'static str, cause: String },
    /// A check constraint refused a value (named by the constraint).
    #[error("value refused by constraint {0}")]
    Constraint(String),
    /// A value that cannot be stored as it is (an event that does not
    /// encode).
    #[error("{0}")]
    Invalid(String),
    #[error("database error: {0}")]
    Database(#[source] tokio_postgres::Error),
}

impl StoreError {
    /// How an unreachable database is named to clients.
    pub const DATABASE: &'static str = "the database";

    /// The database could not be reached (or did not answer in time).
    pub fn database_unavailable(cause: impl Display) -> Self {
        StoreError::Unavailable {
            store: Self::DATABASE,
            cause: cause.to_string(),
        }
    }

    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        match error.as_db_error() {
            Some(db) if db.code() == &SqlState::CHECK_VIOLATION => {
                StoreError::Constraint(db.constraint().unwrap_or("unknown").to_owned())
            }
            _ if is_transient(&error) => StoreError::database_unavailable(error),
            _ => StoreError::Database(error),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(error: deadpool_postgres::PoolError) -> Self {
        StoreError::database_unavailable(error)
    }
}

/// Whether a PostgreSQL error may go away by itself: the connection was
/// lost or refused (SQLSTATE class 08, or no SQLSTATE and an I/O cause),
/// the transaction lost a race (40: serialization failure, deadlock), the
/// server is short of resources or shutting down (53, 57, 58), or a lock
/// was not available (55). Everything else (bad data, constraint
/// violations, a parameter that cannot be encoded) will fail again.
pub fn is_transient(error: &tokio_postgres::Error) -> bool {
    if let Some(code) = error.code() {
        return matches!(&code.code()[..2], "08" | "40" | "53" | "55" | "57" | "58");
    }
    error.is_closed()
        || std::error::Error::source(error).is_some_and(|cause| cause.is::<std::io::Error>())
}
