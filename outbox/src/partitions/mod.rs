//! The time partitions of the two tables that grow with every event. Their
//! rows are only appended, so each is kept in slices of time: the outbox by
//! `created_at` (the start of the writing statement), the inbox by
//! `message_id` (a UUIDv7, whose first 48 bits are its time). Slices are
//! made ahead of the rows that will go into them, and dropped whole once
//! past the table's window (the outbox's only once fully sent). Nothing is
//! deleted row by row and nothing is left for a vacuum to chase; a slice
//! that lives long enough to near the server's anti-wraparound horizon is
//! frozen once, throttled, while cold.
//!
//! The DDL never makes the writers or the relays wait: a partition is
//! attached (`SHARE UPDATE EXCLUSIVE` on the parent, which inserts and
//! reads do not conflict with) after being made apart, and detached
//! `CONCURRENTLY` before it is dropped, each under a short `lock_timeout`
//! so that it gives up and tries again next time rather than queue behind
//! a long transaction. One process at a time changes a database's
//! partitions (`lock`).
//!
//! An outbox slice goes only once nothing in it is still to send and no
//! transaction that wrote into it is still open or prepared ([`retire`]
//! says how, without reading other sessions' activity). Refused and
//! set-aside rows were copied into `outbox_refused` when refused, so they
//! outlive their slice. Before an inbox slice goes, the inbox's horizon
//! moves past it: ids older than the slices are recorded in
//! `inbox_untimed` instead ([`crate::inbox`]).
//!
//! # Layout
//! - [`catalog`]: the slices as the catalog lists them, their names and
//!   bounds, which are missing ahead.
//! - `lock`: one process at a time changes a database's partitions.
//! - [`retire`]: how an outbox slice goes without a row still to send.

mod catalog;
mod lock;
mod retire;

use lock::{Wait, exclusively};

use std::time::Duration;

use time::OffsetDateTime;
use tokio_postgres::Client;

use crate::Result;

/// A table kept in time slices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Sliced by `created_at`.
    Outbox,
    /// Sliced by `message_id`, by the time in its first 48 bits.
    Inbox,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Outbox => "outbox",
            Table::Inbox => "inbox",
        }
    }

    /// The bound of a slice beginning or ending at `at`, as its DDL takes it.
    fn bound(self, at: OffsetDateTime) -> String {
        match self {
            Table::Outbox => catalog::timestamp(at),
            Table::Inbox => crate::inbox::first_id_at(at).to_string(),
        }
    }

    /// SQL reading a bound's text (`b`) back as a time.
    fn time_of_bound(self) -> &'static str {
        match self {
            Table::Outbox => "b::timestamptz",
            Table::Inbox => {
                "to_timestamp(('x' || substr(replace(b, '-', ''), 1, 12))::bit(48)::int8 / 1000.0)"
            }
        }
    }
}

/// How long a slice is, how far ahead slices are made, and when one goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slicing {
    /// The length of one partition.
    pub interval: Duration,
    /// How far past now partitions exist at all times.
    pub ahead: Duration,
    /// A partition whose end is older than this is dropped (once sent).
    pub retention: Duration,
    /// A cold partition whose oldest unfrozen transaction is older than
    /// this many transactions is frozen; `None`: half the server's
    /// `autovacuum_freeze_max_age`.
    pub freeze_after_xids: Option<i64>,
}

impl Slicing {
    /// Slices of a sixth of the retention window (whole minutes, from one
    /// minute to a day), made three slices and at least ten minutes ahead.
    pub fn for_retention(retention: Duration) -> Self {
        let minutes = (retention.as_secs() / 6 / 60).clamp(1, 24 * 60);
        let interval = Duration::from_secs(minutes * 60);
        Slicing {
            interval,
            ahead: (interval * 3).max(Duration::from_secs(600)),
            retention,
            freeze_after_xids: None,
        }
    }
}

/// What one round of upkeep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upkeep {
    pub created: Vec<String>,
    pub dropped: Vec<String>,
    pub frozen: Vec<String>,
    /// Outbox partitions past the window that still hold rows to send, or
    /// that a transaction still holds a lock on (an open or prepared
    /// writer): looked at again next round.
    pub kept: Vec<String>,
    /// Rows found in a detached outbox partition still to send, committed
    /// after it was looked at, moved to `outbox_refused` to be sent.
    pub moved: u64,
}

impl Upkeep {
    fn note(&mut self, name: String, retired: retire::Retired) {
        match retired {
            retire::Retired::Dropped { moved } => {
                self.moved += moved;
                self.dropped.push(name);
            }
            retire::Retired::Unsent | retire::Retired::Busy => self.kept.push(name),
        }
    }
}

/// How long a DDL statement of the upkeep may wait for its lock.
const LOCK_TIMEOUT: &str = "1s";

/// Makes `table`'s partitions from the last one's end to `ahead` past now.
/// Called before a service serves, and at each round of upkeep. When the
/// retention changed since the outbox's partitions ahead were made, those
/// not begun yet (empty) are made again at the new length; the one holding
/// now keeps its length until it ends. (The inbox's stay as they are: one
/// ahead may already hold an id from a clock ahead.)
pub async fn make_ahead(client: &Client, table: Table, slicing: &Slicing) -> Result<Vec<String>> {
    let made = exclusively(client, Wait::Yes, make_ahead_alone(client, table, slicing)).await?;
    Ok(made.unwrap_or_default())
}

async fn make_ahead_alone(client: &Client, table: Table, slicing: &Slicing) -> Result<Vec<String>> {
    let now = OffsetDateTime::now_utc();
    let mut existing = catalog::slices(client, table).await?;
    // Not the inbox's: a slice ahead may hold ids from a clock ahead. Not
    // while a detach is pending either: the outbox takes one at a time.
    let resliced = table == Table::Outbox
        && !existing.iter().any(|slice| slice.detach_pending)
        && existing.iter().any(|slice| {
            slice
                .lower
                .is_some_and(|lower| lower > now && slice.upper != catalog::end_of(lower, slicing))
        });
    if resliced {
        for slice in existing
            .iter()
            .filter(|slice| slice.lower.is_some_and(|lower| lower > now))
        {
            if is_empty(client, &slice.name).await? {
                detach_and_drop(client, table, &slice.name, "CONCURRENTLY").await?;
            }
        }
        existing = catalog::slices(client, table).await?;
    }
    let last_upper = existing.last().map(|s| s.upper);
    let missing = catalog::missing(last_upper, now, slicing);
    if let Some(&(first, _)) = missing.first() {
        if table == Table::Inbox && last_upper != Some(first) {
            // Not following on from the last slice (none yet, or it ended
            // before the window): the ids before the new run are recorded
            // apart, never routed to a gap.
            raise_inbox_horizon(client, first).await?;
        }
    }
    let mut created = Vec::new();
    under_lock_timeout(client, async {
        for (lower, upper) in missing {
            let name = catalog::name_of(table, lower);
            // Made apart and attached: attaching takes no lock that
            // inserts or reads wait for.
            client
                .batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {name} \
                         (LIKE {parent} INCLUDING DEFAULTS INCLUDING CONSTRAINTS); \
                     ALTER TABLE {parent} ATTACH PARTITION {name} \
                         FOR VALUES FROM ('{lower}') TO ('{upper}')",
                    parent = table.name(),
                    lower = table.bound(lower),
                    upper = table.bound(upper),
                ))
                .await?;
            created.push(name);
        }
        Ok(())
    })
    .await?;
    if !created.is_empty() {
        tracing::info!(table = table.name(), ?created, "partitions made ahead");
    }
    Ok(created)
}

/// Moves the inbox's horizon up to `to` (never down): ids made before it
/// are recorded in `inbox_untimed` from then on. It waits (up to the lock
/// timeout) for the transactions recording ids to end, so that none of
/// them routes an id by the old horizon once the new one holds; where the
/// horizon is there already, it takes no lock (the upkeep asks each round).
async fn raise_inbox_horizon(client: &Client, to: OffsetDateTime) -> Result<()> {
    let (class, key) = crate::inbox::HORIZON_LOCK;
    let first = crate::inbox::first_id_at(to);
    let there: bool = client
        .query_one(
            "SELECT COALESCE(bool_and(timed_from >= $1), false) FROM inbox_horizon",
            &[&first],
        )
        .await?
        .try_get(0)?;
    if there {
        return Ok(());
    }
    // One query string: one transaction, so the lock is held until the
    // new horizon is committed.
    let raise = format!(
        "SELECT pg_advisory_xact_lock({class}, {key}); \
         UPDATE inbox_horizon SET timed_from = '{first}' WHERE timed_from < '{first}'"
    );
    under_lock_timeout(client, async { Ok(client.batch_execute(&raise).await?) }).await
}

/// Runs `work` (statements on `client`) with the upkeep's short
/// `lock_timeout`, and resets it after, whatever `work` returned.
async fn under_lock_timeout<T>(
    client: &Client,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    client
        .batch_execute(&format!("SET lock_timeout = '{LOCK_TIMEOUT}'"))
        .await?;
    let result = work.await;
    client.batch_execute("RESET lock_timeout").await?;
    result
}

async fn is_empty(client: &Client, name: &str) -> Result<bool> {
    let sql = format!("SELECT NOT EXISTS (SELECT 1 FROM {name})");
    Ok(client.query_one(&sql, &[]).await?.try_get(0)?)
}

/// One round for `table`: makes partitions ahead, drops those past the
/// window (the outbox's once fully sent), then freezes cold ones nearing
/// the anti-wraparound horizon. Nothing, if another process of the
/// service is doing it now. The freeze (throttled: minutes, on a large
/// slice) runs after the lock is let go, so that a starting instance
/// never waits for it.
pub async fn upkeep(client: &Client, table: Table, slicing: &Slicing) -> Result<Upkeep> {
    let Some(mut upkeep) =
        exclusively(client, Wait::No, make_and_drop(client, table, slicing)).await?
    else {
        return Ok(Upkeep::default());
    };
    upkeep.frozen = freeze_cold(client, table, slicing).await?;
    if !upkeep.dropped.is_empty() || !upkeep.frozen.is_empty() {
        tracing::info!(table = table.name(), dropped = ?upkeep.dropped, frozen = ?upkeep.frozen, "partitions past the retention window dropped");
    }
    if !upkeep.kept.is_empty() {
        tracing::warn!(kept = ?upkeep.kept, "outbox partitions past the retention window kept: rows still to send, or a transaction still holds one (an open or prepared writer)");
    }
    Ok(upkeep)
}

/// The part of a round that changes partitions: makes those ahead, drops
/// those past the window.
async fn make_and_drop(client: &Client, table: Table, slicing: &Slicing) -> Result<Upkeep> {
    let mut upkeep = Upkeep {
        created: make_ahead_alone(client, table, slicing).await?,
        ..Upkeep::default()
    };
    let now = OffsetDateTime::now_utc();
    let slices = catalog::slices(client, table).await?;
    let expired = |slice: &catalog::Slice| slice.upper < now - slicing.retention;
    match table {
        Table::Outbox => retire_expired_outbox(client, &slices, expired, &mut upkeep).await?,
        Table::Inbox => {
            for slice in &slices {
                if slice.detach_pending {
                    // A detach cut short (a restart): finish it, then drop.
                    detach_and_drop(client, table, &slice.name, "FINALIZE").await?;
                    upkeep.dropped.push(slice.name.clone());
                    continue;
                }
                // A slice's length before it goes, its ids are recorded
                // apart (and looked up in it too): an id recorded in it is
                // remembered for at least that long.
                if slice.upper < now - slicing.retention + slicing.interval {
                    raise_inbox_horizon(client, slice.upper).await?;
                }
                if expired(slice) {
                    detach_and_drop(client, table, &slice.name, "CONCURRENTLY").await?;
                    upkeep.dropped.push(slice.name.clone());
                }
            }
        }
    }
    Ok(upkeep)
}

/// Freezes the ended slices within the window whose oldest unfrozen
/// transaction passed `freeze_after_xids`; returns their names.
async fn freeze_cold(client: &Client, table: Table, slicing: &Slicing) -> Result<Vec<String>> {
    let freeze_after = match slicing.freeze_after_xids {
        Some(xids) => xids,
        None => {
            let row = client
                .query_one(
                    "SELECT current_setting('autovacuum_freeze_max_age')::int8 / 2",
                    &[],
                )
                .await?;
            row.try_get(0)?
        }
    };
    let now = OffsetDateTime::now_utc();
    let mut frozen = Vec::new();
    for slice in catalog::slices(client, table).await? {
        let cold = slice.upper < now && slice.frozen_xid_age > freeze_after;
        let expired = slice.upper < now - slicing.retention;
        if cold && !expired && !slice.detach_pending {
            freeze(client, &slice.name).await?;
            frozen.push(slice.name);
        }
    }
    Ok(frozen)
}

/// The outbox's slices past the window go ([`retire`]): first those
/// detached in an earlier round, then one whose detach is pending (the
/// outbox lets one detach be pending at a time, and no other begins until
/// it is finalized), then the others, oldest first, until one is busy.
async fn retire_expired_outbox(
    client: &Client,
    slices: &[catalog::Slice],
    expired: impl Fn(&catalog::Slice) -> bool,
    upkeep: &mut Upkeep,
) -> Result<()> {
    for name in catalog::detached_outbox_slices(client).await? {
        let retired = retire::retire_detached(client, &name).await?;
        upkeep.note(name, retired);
    }
    let pending = slices.iter().filter(|slice| slice.detach_pending);
    let others = slices
        .iter()
        .filter(|slice| !slice.detach_pending && expired(slice));
    let mut busy = false;
    for slice in pending.chain(others) {
        if busy {
            upkeep.kept.push(slice.name.clone());
            continue;
        }
        let retired = retire::retire(client, slice).await?;
        busy = retired == retire::Retired::Busy;
        upkeep.note(slice.name.clone(), retired);
    }
    Ok(())
}

/// Detaches `name` from `table` (`CONCURRENTLY`: readers and writers go
/// on; or `FINALIZE` for a detach cut short), on its own: a concurrent
/// detach cannot run in a transaction block.
async fn detach(client: &Client, table: Table, name: &str, how: &str) -> Result<()> {
    under_lock_timeout(client, async {
        let detach = format!("ALTER TABLE {} DETACH PARTITION {name} {how}", table.name());
        Ok(client.batch_execute(&detach).await?)
    })
    .await
}

/// [`detach`], then drops it.
async fn detach_and_drop(client: &Client, table: Table, name: &str, how: &str) -> Result<()> {
    detach(client, table, name, how).await?;
    under_lock_timeout(client, async {
        Ok(client.batch_execute(&format!("DROP TABLE {name}")).await?)
    })
    .await
}

/// Freezes a cold partition, throttled as autovacuum is (its rows are
/// never updated again: one pass is enough for its whole life).
async fn freeze(client: &Client, name: &str) -> Result<()> {
    client
        .batch_execute("SET vacuum_cost_delay = 2; SET vacuum_cost_limit = 200")
        .await?;
    let frozen = client
        .batch_execute(&format!("VACUUM (FREEZE) {name}"))
        .await;
    client
        .batch_execute("RESET vacuum_cost_delay; RESET vacuum_cost_limit")
        .await?;
    Ok(frozen?)
}
