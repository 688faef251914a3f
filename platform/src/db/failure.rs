//! Why a statement or transaction did not go through, told apart the way
//! callers act on it: a store that could not be reached (retry later, 503)
//! or a refusal that will happen again (a bug of ours, or bad data).

use std::fmt::Display;
use std::sync::Mutex;
use std::time::Instant;

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
    #[error("database error: {}", explain(.0))]
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

/// A failed statement as a log line can carry it: the server's message
/// and SQLSTATE (`permission denied for table outbox (42501)`), which the
/// driver's own text ("db error") leaves out; never the detail, which may
/// hold a row's values. Other failures as the driver tells them, with
/// their cause.
pub fn explain(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(error) {
            Some(cause) => format!("{error}: {cause}"),
            None => error.to_string(),
        },
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
/// server is short of resources or shutting down (53, 57, 58), a lock was
/// not available (55), or the server is read-only (25006: a primary being
/// demoted, or a standby a connection reached before a failover). Every
/// other error (bad data, constraint violations, a parameter that cannot
/// be encoded) will fail again.
///
/// A read-only refusal also retires every pooled connection opened before
/// it (see [`super::pool`]): their server no longer takes writes.
pub fn is_transient(error: &tokio_postgres::Error) -> bool {
    if let Some(code) = error.code() {
        if code == &SqlState::READ_ONLY_SQL_TRANSACTION {
            note_read_only(Instant::now());
            return true;
        }
        return matches!(&code.code()[..2], "08" | "40" | "53" | "55" | "57" | "58");
    }
    error.is_closed()
        || std::error::Error::source(error).is_some_and(|cause| cause.is::<std::io::Error>())
}

/// When a statement of this process was last refused for a read-only
/// server.
static READ_ONLY_SEEN: Mutex<Option<Instant>> = Mutex::new(None);

fn note_read_only(at: Instant) {
    let mut seen = READ_ONLY_SEEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if seen.is_none_or(|seen| seen < at) {
        *seen = Some(at);
    }
}

/// Whether a connection opened at `opened` was opened before the last
/// read-only refusal: it may be on the server that refused.
pub(super) fn opened_before_read_only(opened: Instant) -> bool {
    READ_ONLY_SEEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .is_some_and(|seen| opened <= seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_opened_before_a_read_only_refusal_are_retired() {
        let before = Instant::now();
        note_read_only(Instant::now());
        let after = Instant::now() + std::time::Duration::from_millis(1);
        assert!(opened_before_read_only(before));
        assert!(!opened_before_read_only(after));
    }
}
