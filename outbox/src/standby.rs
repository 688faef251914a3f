//! Nothing goes out before a standby has it. With synchronous replication
//! a commit is acknowledged once a standby has it, but one whose wait for
//! the standby was cancelled (a client's deadline) is visible on the
//! primary while it is only local, and a failover would lose it. So before
//! a relay publishes a batch, and before the order writer answers 201 for
//! a commit that came back with that warning, a commit made after the rows
//! were seen must come back from a synchronous standby: its log record
//! follows theirs, so the standby has theirs too. While no standby
//! confirms, the caller waits; if the primary dies meanwhile, the check
//! fails with its connection and nothing is sent.
//!
//! The commit updates the one row of `outbox_standby_check`: a
//! transaction that writes nothing, or only takes a transaction id, is
//! committed without waiting for a standby. The relay makes it only where
//! `synchronous_standby_names` is set, which its claim reads in the
//! statement that reads the rows ([`STANDBYS_SQL`]): a single server pays
//! no statement, transaction or round trip for it. Nothing may cancel the
//! check's own wait (it would return with the same warning): nobody
//! cancels the relay's statements, and `statement_timeout` ends before a
//! commit waits.
//!
//! The check runs on another connection of the pool than the claim (whose
//! transaction stays open until the cursor moves), and with a multi-host
//! URL, right after a failover, that connection may reach another server
//! than the one the rows were read from: a commit there proves nothing of
//! them. So the claim reads the identity of its server ([`SERVER_SQL`]:
//! address, port and the start of its postmaster; the system identifier
//! is the same on every member of a Patroni cluster), and the check
//! proves its commit only on the same server, or fails.

use std::time::Duration;

use deadpool_postgres::{Pool, Timeouts};

use crate::Result;

/// A commit that waits for a synchronous standby (a plain local commit on
/// a server without them).
pub const STANDBY_CHECK_SQL: &str =
    "UPDATE outbox_standby_check SET checked_at = now() WHERE id = 1";

/// Whether commits wait for synchronous standbys: a column of the relay's
/// read, evaluated after the rows were seen (the setting changes only on a
/// reload, as a failover manager makes one).
pub(crate) const STANDBYS_SQL: &str = "current_setting('synchronous_standby_names') <> ''";

/// The identity of the server a session is on: its address and port, and
/// when its postmaster started (a restarted server may have lost what was
/// only local).
pub const SERVER_SQL: &str =
    "concat_ws(' ', inet_server_addr(), inet_server_port(), pg_postmaster_start_time())";

/// How long the relay's check waits for a connection of the pool. The
/// relay holds one already (its claim), so with every connection held by
/// relays waiting for a second one, the step fails and lets its own go
/// instead of waiting for ever.
const CONNECTION_WAIT: Duration = Duration::from_secs(2);

/// Returns once a synchronous standby has every commit the caller saw on
/// `server` (the claim's [`SERVER_SQL`]); called where [`STANDBYS_SQL`]
/// was true. Fails if the pool's connection is on another server.
pub async fn has_what_was_read(pool: &Pool, server: &str) -> Result<()> {
    let timeouts = Timeouts {
        wait: Some(CONNECTION_WAIT),
        ..pool.timeouts()
    };
    let client = pool.timeout_get(&timeouts).await?;
    // One implicit transaction: its commit (the check) comes before the
    // last statement's completion, and the stream ends after both.
    let answers = client
        .simple_query(&format!("SELECT {SERVER_SQL}; {STANDBY_CHECK_SQL}"))
        .await?;
    let here = answers.iter().find_map(|answer| match answer {
        tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    });
    match here {
        Some(here) if here == server => Ok(()),
        here => Err(crate::Error::Unavailable(format!(
            "the standby check reached {} instead of {server}, where the rows were read (a failover?): nothing sent",
            here.as_deref().unwrap_or("an unnamed server")
        ))),
    }
}
