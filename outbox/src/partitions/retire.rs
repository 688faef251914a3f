//! How an outbox slice past the window goes without taking a row still
//! to send with it, whatever role runs the upkeep and whatever is open.
//!
//! 1. While the slice holds a row still to come (`outbox_unsent`, the one
//!    rule of [`crate::unsent`], for its range of times), it stays: the
//!    relays send it through the outbox as usual.
//! 2. It is detached `CONCURRENTLY`. The detach marks it "detach pending"
//!    (new statements no longer reach it), then waits for every
//!    transaction holding a lock on the outbox. Cut short by the upkeep's
//!    lock timeout, it stays pending and the next round finalizes it.
//! 3. Its last look, in one transaction: `ACCESS EXCLUSIVE` on the
//!    detached table, granted only once no transaction holds any lock on
//!    it, so every transaction that wrote into it has ended (prepared
//!    ones keep their locks until committed or rolled back; a prepared or
//!    open writer makes the lock time out, and the next round looks
//!    again); and none can write into it again, as no statement reaches
//!    it through the outbox any more. The rows still to come by the same
//!    rule, read by the table's own name, are copied into
//!    `outbox_refused` as due for another attempt (with no attempt
//!    counted), and the table is dropped. A relay's batch that read the
//!    slice holds its lock until it commits, so the rule sees that batch's
//!    cursor: what it sent is not sent again.
//!
//! What reaches step 3 with rows is a transaction that wrote into the
//! slice and committed after step 1 looked: one open since before the
//! slice's end (rows carry their statement's start, so nothing newer
//! writes into an expired slice), or a prepared one. A slice whose step 3
//! was cut short stays detached, not dropped, and is found again by its
//! name ([`super::catalog::detached_outbox_slices`]).

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::catalog::{Slice, timestamp};
use super::{LOCK_TIMEOUT, Table, detach};
use crate::Result;

/// What became of a slice this round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retired {
    /// Dropped; this many of its rows, committed late, were moved to be
    /// sent from `outbox_refused`.
    Dropped { moved: u64 },
    /// Still holds rows to send through the outbox.
    Unsent,
    /// A transaction still holds a lock on it (an open or prepared
    /// writer, a relay's batch): looked at again next round.
    Busy,
}

/// One round for an outbox slice past the window (steps 1 to 3).
pub(super) async fn retire(client: &Client, slice: &Slice) -> Result<Retired> {
    if !slice.detach_pending {
        if has_unsent(client, slice).await? {
            return Ok(Retired::Unsent);
        }
        if busy(detach(client, Table::Outbox, &slice.name, "CONCURRENTLY").await)? {
            return Ok(Retired::Busy);
        }
    } else if busy(detach(client, Table::Outbox, &slice.name, "FINALIZE").await)? {
        return Ok(Retired::Busy);
    }
    last_look(client, &slice.name).await
}

/// Step 3 for a slice detached in an earlier round.
pub(super) async fn retire_detached(client: &Client, name: &str) -> Result<Retired> {
    last_look(client, name).await
}

/// Whether an error is the lock timeout's (the slice is busy), or another.
fn busy(outcome: Result<()>) -> Result<bool> {
    match outcome {
        Ok(()) => Ok(false),
        Err(crate::Error::Postgres(error))
            if error.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) =>
        {
            Ok(true)
        }
        Err(error) => Err(error),
    }
}

/// Whether the slice holds a row still to come, read through the outbox
/// for the slice's range of times.
async fn has_unsent(client: &Client, slice: &Slice) -> Result<bool> {
    let lower = slice
        .lower
        .map(|lower| format!("created_at >= '{}' AND ", timestamp(lower)))
        .unwrap_or_default();
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM outbox_unsent WHERE {lower}created_at < '{}')",
        timestamp(slice.upper)
    );
    Ok(client.query_one(&sql, &[]).await?.try_get(0)?)
}

/// Step 3: locks the detached `name`, moves what is still to come in it
/// to `outbox_refused`, drops it; all or nothing.
async fn last_look(client: &Client, name: &str) -> Result<Retired> {
    let move_unsent = format!(
        "INSERT INTO outbox_refused (id, message_id, aggregate_id, partition, event_type, \
             payload, created_at, queue, attempts, last_error) \
         SELECT id, message_id, aggregate_id, partition, event_type, payload, created_at, queue, \
             0, 'committed into time partition {name} while it was detached' \
         FROM ({unsent}) u \
         ON CONFLICT (id) DO NOTHING",
        unsent = crate::unsent::rows_of(name)
    );
    client.batch_execute("BEGIN").await?;
    let outcome = async {
        client
            .batch_execute(&format!(
                "SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'; \
                 LOCK TABLE {name} IN ACCESS EXCLUSIVE MODE"
            ))
            .await?;
        let moved = client.execute(&move_unsent, &[]).await?;
        client.batch_execute(&format!("DROP TABLE {name}")).await?;
        Ok(moved)
    }
    .await;
    match outcome {
        Ok(moved) => {
            client.batch_execute("COMMIT").await?;
            if moved > 0 {
                tracing::warn!(
                    partition = name,
                    moved,
                    "rows committed into an outbox partition as it was detached are sent from outbox_refused"
                );
            }
            Ok(Retired::Dropped { moved })
        }
        Err(error) => {
            client.batch_execute("ROLLBACK").await?;
            busy(Err(error)).map(|_| Retired::Busy)
        }
    }
}
