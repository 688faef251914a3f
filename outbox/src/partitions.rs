//! The time partitions of the two tables that grow with every event. Their
//! rows are only appended, so each is kept in slices of time: the outbox by
//! `created_at`, the inbox by `message_id` (a UUIDv7, whose first 48 bits
//! are its time). Slices are made ahead of the rows that will go into
//! them, and dropped whole once past the table's window (the outbox's only
//! once fully sent). Nothing is deleted row by row and nothing is left for
//! a vacuum to chase; a slice that lives long enough to near the server's
//! anti-wraparound horizon is frozen once, throttled, while cold.
//!
//! The DDL never makes the writers or the relays wait: a partition is
//! attached (`SHARE UPDATE EXCLUSIVE` on the parent, which inserts and
//! reads do not conflict with) after being made apart, and detached
//! `CONCURRENTLY` before it is dropped, each under a short `lock_timeout`
//! so that it gives up and tries again next time rather than queue behind
//! a long transaction.
//!
//! An outbox slice is dropped only when no row in it is still to send (its
//! claim partition's cursor is past every row, including rows of
//! transactions the cursor saw running) and no transaction that could
//! still insert into it is open. Refused and set-aside rows were copied
//! into `outbox_refused` when refused, so they outlive their slice. Before
//! an inbox slice goes, the inbox's horizon moves past it: ids older than
//! the slices are recorded in `inbox_untimed` instead ([`crate::inbox`]).

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
            Table::Outbox => timestamp(at),
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

/// One partition, as the catalog has it.
#[derive(Debug, Clone, PartialEq)]
struct Slice {
    name: String,
    /// `None` for the partition of everything before the first slice.
    lower: Option<OffsetDateTime>,
    upper: OffsetDateTime,
    detach_pending: bool,
    frozen_xid_age: i64,
}

/// What one round of upkeep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Upkeep {
    pub created: Vec<String>,
    pub dropped: Vec<String>,
    pub frozen: Vec<String>,
    /// Partitions past the window that still hold rows to send, or that an
    /// open transaction might still insert into.
    pub kept: Vec<String>,
}

/// `table`'s partitions with their bounds as times, oldest first.
fn slices_sql(table: Table) -> String {
    format!(
        "SELECT c.relname::text, \
             (SELECT {time} FROM (SELECT (regexp_match(pg_get_expr(c.relpartbound, c.oid), \
                 'FROM \\(''([^'']+)''\\)'))[1] AS b) x), \
             (SELECT {time} FROM (SELECT (regexp_match(pg_get_expr(c.relpartbound, c.oid), \
                 'TO \\(''([^'']+)''\\)'))[1] AS b) x) AS upper, \
             i.inhdetachpending, age(c.relfrozenxid)::int8 \
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = '{table}'::regclass \
         ORDER BY upper",
        time = table.time_of_bound(),
        table = table.name(),
    )
}

/// How long a DDL statement of the upkeep may wait for its lock.
const LOCK_TIMEOUT: &str = "1s";

async fn slices(client: &Client, table: Table) -> Result<Vec<Slice>> {
    let rows = client.query(&slices_sql(table), &[]).await?;
    rows.iter()
        .map(|row| {
            Ok(Slice {
                name: row.try_get(0)?,
                lower: row.try_get(1)?,
                upper: row.try_get(2)?,
                detach_pending: row.try_get(3)?,
                frozen_xid_age: row.try_get(4)?,
            })
        })
        .collect()
}

/// The name of `table`'s partition starting at `lower`:
/// `outbox_20261202_0315`.
fn name_of(table: Table, lower: OffsetDateTime) -> String {
    let lower = lower.to_offset(time::UtcOffset::UTC);
    format!(
        "{}_{:04}{:02}{:02}_{:02}{:02}",
        table.name(),
        lower.year(),
        u8::from(lower.month()),
        lower.day(),
        lower.hour(),
        lower.minute()
    )
}

/// The start of the slice that holds `at`: slices are aligned on
/// multiples of the interval since the Unix epoch.
fn floor(at: OffsetDateTime, interval: Duration) -> OffsetDateTime {
    let step = interval.as_secs().max(60) as i64;
    let seconds = at.unix_timestamp();
    OffsetDateTime::from_unix_timestamp(seconds - seconds.rem_euclid(step))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The slices to make so that partitions cover `now` to `now + ahead`
/// without gaps after the last one `upper` ends (or from the slice of
/// `now`, when there is none or it ended before the retention window:
/// nothing can still be written that far back).
fn missing(
    upper: Option<OffsetDateTime>,
    now: OffsetDateTime,
    slicing: &Slicing,
) -> Vec<(OffsetDateTime, OffsetDateTime)> {
    let mut from = match upper {
        Some(upper) if upper >= now - slicing.retention => upper,
        _ => floor(now, slicing.interval),
    };
    let until = now + slicing.ahead;
    let mut made = Vec::new();
    while from < until {
        let next = floor(from, slicing.interval) + slicing.interval;
        made.push((from, next));
        from = next;
    }
    made
}

/// Makes `table`'s partitions from the last one's end to `ahead` past now.
/// Called before a service serves, and at each round of upkeep. When the
/// retention changed since the outbox's partitions ahead were made, those
/// not begun yet (empty) are made again at the new length; the one holding
/// now keeps its length until it ends. (The inbox's stay as they are: one
/// ahead may already hold an id from a clock ahead.)
pub async fn make_ahead(client: &Client, table: Table, slicing: &Slicing) -> Result<Vec<String>> {
    let now = OffsetDateTime::now_utc();
    let mut existing = slices(client, table).await?;
    let length = time::Duration::try_from(slicing.interval).unwrap_or(time::Duration::MINUTE);
    // Not the inbox's: a slice ahead may hold ids from a clock ahead.
    let resliced = table == Table::Outbox
        && existing.iter().any(|slice| {
            slice
                .lower
                .is_some_and(|lower| lower > now && slice.upper - lower != length)
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
        existing = slices(client, table).await?;
    }
    let last_upper = existing.last().map(|s| s.upper);
    let missing = missing(last_upper, now, slicing);
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
            let name = name_of(table, lower);
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

/// A time as PostgreSQL reads it back exactly.
fn timestamp(at: OffsetDateTime) -> String {
    format!(
        "{}+00",
        at.to_offset(time::UtcOffset::UTC)
            .format(TIMESTAMP)
            .unwrap_or_default()
    )
}

const TIMESTAMP: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");

/// Whether a partition holds a row still to send: past its claim
/// partition's cursor, or written by a transaction a cursor saw running.
fn pending_in(name: &str) -> String {
    format!(
        "SELECT EXISTS ( \
             SELECT 1 FROM outbox_partition_cursor c \
             JOIN LATERAL (SELECT 1 FROM {name} o \
                           WHERE o.partition = c.partition AND o.id > c.released_id LIMIT 1) x ON true) \
         OR EXISTS ( \
             SELECT 1 FROM {name} o \
             WHERE o.xid = ANY (ARRAY(SELECT pg_snapshot_xip(released_snapshot) FROM outbox_partition_cursor)))"
    )
}

/// The start of the oldest transaction open on this database: a
/// transaction inserts with `created_at` = its start, so no partition
/// ending after it may go.
const OLDEST_OPEN_SQL: &str = "\
    SELECT min(xact_start) FROM pg_stat_activity \
    WHERE datname = current_database() AND xact_start IS NOT NULL AND pid <> pg_backend_pid()";

/// One round for `table`: makes partitions ahead, drops those past the
/// window (the outbox's once fully sent), freezes cold ones nearing the
/// anti-wraparound horizon.
pub async fn upkeep(client: &Client, table: Table, slicing: &Slicing) -> Result<Upkeep> {
    let mut upkeep = Upkeep {
        created: make_ahead(client, table, slicing).await?,
        ..Upkeep::default()
    };
    let now = OffsetDateTime::now_utc();
    let oldest_open: Option<OffsetDateTime> =
        client.query_one(OLDEST_OPEN_SQL, &[]).await?.try_get(0)?;
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
    for slice in slices(client, table).await? {
        let expired = slice.upper < now - slicing.retention;
        let in_use = oldest_open.is_some_and(|start| start < slice.upper);
        if slice.detach_pending {
            // A detach cut short (a restart): finish it, then drop.
            detach_and_drop(client, table, &slice.name, "FINALIZE").await?;
            upkeep.dropped.push(slice.name);
        } else if table == Table::Inbox {
            // A slice's length before it goes, its ids are recorded apart
            // (and looked up in it too): an id recorded in it is remembered
            // for at least that long.
            if slice.upper < now - slicing.retention + slicing.interval {
                raise_inbox_horizon(client, slice.upper).await?;
            }
            if expired {
                detach_and_drop(client, table, &slice.name, "CONCURRENTLY").await?;
                upkeep.dropped.push(slice.name);
            } else if slice.upper < now && slice.frozen_xid_age > freeze_after {
                freeze(client, &slice.name).await?;
                upkeep.frozen.push(slice.name);
            }
        } else if expired && !in_use && !has_pending(client, &slice.name).await? {
            detach_and_drop(client, table, &slice.name, "CONCURRENTLY").await?;
            upkeep.dropped.push(slice.name);
        } else if expired {
            upkeep.kept.push(slice.name);
        } else if slice.upper < now && slice.frozen_xid_age > freeze_after {
            freeze(client, &slice.name).await?;
            upkeep.frozen.push(slice.name);
        }
    }
    if !upkeep.dropped.is_empty() || !upkeep.frozen.is_empty() {
        tracing::info!(table = table.name(), dropped = ?upkeep.dropped, frozen = ?upkeep.frozen, "partitions past the retention window dropped");
    }
    if !upkeep.kept.is_empty() {
        tracing::warn!(kept = ?upkeep.kept, "outbox partitions past the retention window kept: rows still to send, or a transaction open since");
    }
    Ok(upkeep)
}

async fn has_pending(client: &Client, name: &str) -> Result<bool> {
    Ok(client.query_one(&pending_in(name), &[]).await?.try_get(0)?)
}

/// Detaches `name` from `table` (`CONCURRENTLY`: readers and writers go
/// on; or `FINALIZE` for a detach cut short) and drops it. Each statement
/// on its own: a concurrent detach cannot run in a transaction block.
async fn detach_and_drop(client: &Client, table: Table, name: &str, how: &str) -> Result<()> {
    under_lock_timeout(client, async {
        client
            .batch_execute(&format!(
                "ALTER TABLE {} DETACH PARTITION {name} {how}",
                table.name()
            ))
            .await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn slicing(minutes: u64) -> Slicing {
        Slicing::for_retention(Duration::from_secs(minutes * 60))
    }

    #[test]
    fn slices_are_a_sixth_of_the_window_from_a_minute_to_a_day() {
        assert_eq!(
            slicing(7 * 24 * 60).interval,
            Duration::from_secs(24 * 3600)
        );
        assert_eq!(slicing(60).interval, Duration::from_secs(600));
        assert_eq!(slicing(5).interval, Duration::from_secs(60));
        assert_eq!(slicing(5).ahead, Duration::from_secs(600));
        assert_eq!(
            slicing(7 * 24 * 60).ahead,
            Duration::from_secs(3 * 24 * 3600)
        );
    }

    #[test]
    fn missing_slices_follow_the_last_one_without_gaps_up_to_ahead() {
        let now = datetime!(2026-12-02 03:17:30 UTC);
        let plan = slicing(60); // ten-minute slices, thirty minutes ahead
        let made = missing(Some(datetime!(2026-12-02 03:15:00 UTC)), now, &plan);
        assert_eq!(made.first().unwrap().0, datetime!(2026-12-02 03:15:00 UTC));
        assert_eq!(made.first().unwrap().1, datetime!(2026-12-02 03:20:00 UTC));
        assert!(made.windows(2).all(|pair| pair[0].1 == pair[1].0));
        assert!(made.last().unwrap().1 >= now + plan.ahead);
        assert!(
            made.iter()
                .skip(1)
                .all(|(lower, upper)| *upper - *lower == time::Duration::minutes(10))
        );
        // Nothing missing when the slices already reach far enough.
        assert!(missing(Some(now + plan.ahead), now, &plan).is_empty());
        // None yet, or the last one long gone: from the slice of now.
        let fresh = missing(None, now, &plan);
        assert_eq!(fresh[0].0, datetime!(2026-12-02 03:10:00 UTC));
        let stale = missing(Some(datetime!(2026-11-01 00:00:00 UTC)), now, &plan);
        assert_eq!(stale[0].0, datetime!(2026-12-02 03:10:00 UTC));
    }

    #[test]
    fn names_and_bounds_are_in_utc() {
        let at = datetime!(2026-12-02 04:05:00 +01:00);
        assert_eq!(name_of(Table::Outbox, at), "outbox_20261202_0305");
        assert_eq!(name_of(Table::Inbox, at), "inbox_20261202_0305");
        assert_eq!(timestamp(at), "2026-12-02 03:05:00+00");
    }
}
