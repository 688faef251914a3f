//! Still to come: the one rule by which every reader of the outbox tells
//! the rows the relays have yet to send, written once, here.
//!
//! A row is still to come while its id is above its claim partition's
//! released id, or its transaction is not visible in the partition's
//! released snapshot (`pg_visible_in_snapshot`). The released snapshot
//! lists every transaction below the relay's own id that its read did not
//! see (`outbox::relay`'s snapshot listing), and a row below the
//! released id was written by such a transaction (docs/ARCHITECTURE.md,
//! "Nothing skipped"), so both parts are found through an index:
//! - above: by id, from the lowest released id (`outbox_by_id`);
//! - late (at or below the released id): by the transaction ids the
//!   snapshots list (`outbox_by_xid`). `OFFSET 0` keeps the planner from
//!   reading the id index below the cursor instead: every row ever sent.
//!
//! Its readers: the view `outbox_unsent` ([`VIEWS_SQL`], made from this
//! text after every migration run), which the view `outbox_pending` (with
//! refused rows due again), `outbox stats`, the gauges and the upkeep's
//! check of a time partition read; the relay's read and its choice of
//! partitions, which apply the two parts ([`ABOVE`], [`late`]) to the
//! outbox directly (through the view, the read's `ORDER BY id LIMIT`
//! sorted every new row instead of walking the id index, and its plan,
//! estimated dearer as a generic one, was made again for every batch);
//! and the upkeep's last look at a detached partition ([`rows_of`] with
//! its own name).

use std::sync::LazyLock;

/// The outbox's columns, as the views show them (named: a view's columns
/// stay as they were made, whatever a later migration adds to the table).
const COLUMNS: &str = "o.id, o.message_id, o.aggregate_id, o.partition, o.event_type, o.payload, \
                       o.created_at, o.queue, o.xid";

/// The rule's first part, for a row `o`: above its claim partition's
/// released id. A reader adds a bound the id index can start from (the
/// relay's read: the lowest released id of the partitions it claimed, so
/// that its `ORDER BY id LIMIT` walks the index in order from there).
pub(crate) const ABOVE: &str =
    "o.id > (SELECT released_id FROM outbox_relay_cursor)[o.partition + 1]";

/// The rule's second part: rows `o` at or below the released id of their
/// claim partition's cursor `c` that its released snapshot does not see,
/// found by the transaction ids the snapshots of `cursors` (a relation of
/// `partition, released_id, released_snapshot`) list. Selects `select`
/// from `table`.
pub(crate) fn late(select: &str, table: &str, cursors: &str) -> String {
    format!(
        "SELECT {select} FROM ( \
             SELECT * FROM {table} \
             WHERE xid = ANY (ARRAY(SELECT pg_snapshot_xip(released_snapshot) FROM {cursors})) \
             OFFSET 0) o \
         JOIN {cursors} c ON c.partition = o.partition \
         WHERE o.id <= c.released_id AND NOT pg_visible_in_snapshot(o.xid, c.released_snapshot)"
    )
}

/// The rows of `table` (the outbox, or a time partition of it by name)
/// still to come: the outbox's columns, and `late` (at or below the
/// released id).
pub(crate) fn rows_of(table: &str) -> String {
    format!(
        "SELECT {COLUMNS}, false AS late FROM {table} o \
         WHERE o.id > (SELECT min(released_id) FROM outbox_partition_cursor) AND {ABOVE} \
         UNION ALL {late}",
        late = late(
            &format!("{COLUMNS}, true AS late"),
            table,
            "outbox_partition_cursor"
        )
    )
}

/// The views `outbox stats`, the gauges, the upkeep's check of a time
/// partition, the tools and operators read: `outbox_unsent` ([`rows_of`]
/// the outbox; `late` says which part found a row) and `outbox_pending`
/// (those, and refused rows due for another attempt).
pub static VIEWS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "CREATE OR REPLACE VIEW outbox_unsent AS {}; \
         CREATE OR REPLACE VIEW outbox_pending AS \
             SELECT id, message_id, aggregate_id, partition, event_type, payload, created_at, queue \
             FROM outbox_unsent \
             UNION ALL \
             SELECT id, message_id, aggregate_id, partition, event_type, payload, created_at, queue \
             FROM outbox_refused WHERE set_aside_at IS NULL",
        rows_of("outbox")
    )
});
