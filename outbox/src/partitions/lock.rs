//! One process at a time changes a database's partitions: the instances
//! of a service keep the partitions of one database.

use tokio_postgres::Client;

use crate::Result;

/// The key of the session-level advisory lock under which one process at
/// a time changes a database's partitions: the instances of a service
/// keep the partitions of one database, and two making the same slice at
/// once failed (a duplicate `pg_type` entry; the second instance to start
/// stopped), as two detaching at once would (the outbox lets one detach
/// be pending at a time). `part`.
const PARTITIONS_LOCK: i64 = 0x7061_7274;

/// Whether a process waits for another that holds [`PARTITIONS_LOCK`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// At start: the partitions ahead must exist before the service serves.
    Yes,
    /// A round of upkeep: the other process is doing it.
    No,
}

/// Runs `work` holding [`PARTITIONS_LOCK`]; `None` if another process held
/// it and `wait` was [`Wait::No`].
pub(super) async fn exclusively<T>(
    client: &Client,
    wait: Wait,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<Option<T>> {
    let locked = match wait {
        Wait::Yes => {
            client
                .execute("SELECT pg_advisory_lock($1)", &[&PARTITIONS_LOCK])
                .await?;
            true
        }
        Wait::No => client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&PARTITIONS_LOCK])
            .await?
            .try_get(0)?,
    };
    if !locked {
        return Ok(None);
    }
    let outcome = work.await;
    // The session's end releases it too: a failed unlock is no leak.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&PARTITIONS_LOCK])
        .await;
    outcome.map(Some)
}
