//! The relay's SQL: claiming a batch, moving the cursor past it, recording
//! refusals.
//!
//! The outbox is append-only; how far the relay got is kept per claim
//! partition (`outbox_relay_cursor`, one row holding all sixteen): a
//! released id and a released snapshot, and what is still to come by them
//! is the rule of [`crate::unsent`], whose two parts the read and the
//! choice of partitions apply. A batch transaction first takes whole
//! claim partitions (transaction-level advisory locks: all it can, if it
//! may take all sixteen, or else those with something to send, tried in
//! random order; another relay takes others, so two relays never send
//! events of one aggregate at once, and no lock is written to the WAL),
//! then reads in one statement, under one snapshot:
//! - new rows: above the partition's released id, in id order, up to the
//!   batch size (from the lowest released id of the claimed partitions,
//!   along the id index);
//! - late rows: at or below it, of transactions the released snapshot did
//!   not see, all of them (bounded by the transactions that were running
//!   at the last read: never the backlog);
//! - and refused rows due for another attempt (`outbox_refused`).
//!
//! The read takes the batch's transaction id as it returns its rows,
//! after its snapshot was taken. Once the broker confirmed, the cursor
//! becomes (the largest new id read; the read's snapshot with every
//! transaction id from its xmax below the batch's own listed:
//! [`super::snapshot`]). The proof
//! that nothing is skipped, whatever order transactions take their ids in
//! and commit in, is in docs/ARCHITECTURE.md ("Nothing skipped"); it needs
//! the claim to be the first thing its transaction does ([`claim`] checks)
//! and writers to take their transaction id before their row id (the id's
//! default does). Within an aggregate, ids follow commit order (its
//! writers serialise on its row), and a snapshot that sees an event sees
//! the ones before it, so a partition's events leave in order.

use std::sync::LazyLock;

use deadpool_postgres::Transaction;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::Result;
use crate::schema::PARTITIONS;
use crate::standby::{SERVER_SQL, STANDBYS_SQL};
use crate::unsent::{ABOVE, late};

/// A row as the relay reads it.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub message_id: Uuid,
    pub aggregate_id: String,
    pub event_type: String,
    pub payload: String,
    pub created_at: OffsetDateTime,
    /// The one queue it is for (a requeued dead letter), if any.
    pub queue: Option<String>,
}

/// The columns every reader of outbox rows selects, in [`OutboxRow::from_row`]'s order.
pub(crate) const ROW_COLUMNS: &str =
    "o.id, o.message_id, o.aggregate_id, o.event_type, o.payload::text, o.created_at, o.queue";

impl OutboxRow {
    /// A row selected with [`ROW_COLUMNS`].
    pub(crate) fn from_row(row: &tokio_postgres::Row) -> Result<Self> {
        Ok(OutboxRow {
            id: row.try_get(0)?,
            message_id: row.try_get(1)?,
            aggregate_id: row.try_get(2)?,
            event_type: row.try_get(3)?,
            payload: row.try_get(4)?,
            created_at: row.try_get(5)?,
            queue: row.try_get(6)?,
        })
    }
}

/// The batch's statements run on generic plans, made once per connection:
/// a custom plan is no better (every parameter is a cursor position, a
/// set of partitions or a batch size), and PostgreSQL's choice between
/// the two follows estimates that a grown outbox's statistics tip (a read
/// through the view `outbox_unsent` was planned again for every batch on a
/// database of 2 million orders: a millisecond of the server's time each).
const GENERIC_PLANS_SQL: &str = "SET LOCAL plan_cache_mode = force_generic_plan";

/// The first key of the advisory locks that claim partitions (the second
/// is the partition): `outb`.
const CLAIM_LOCK: i32 = 0x6f75_7462;

/// Takes up to `$2` claim partitions with something to send (advisory
/// lock `$1`, partition), in random order so that none starves when a
/// relay takes fewer than all. The candidates are listed first
/// (`MATERIALIZED`), so that a lock is tried only on a row the `LIMIT`
/// still wants. A partition's first new row is looked for in id order
/// (`ORDER BY id LIMIT 1`: as a plain `EXISTS`, the generic plan built a
/// bitmap of every new row for each partition, 130 ms a batch with
/// 300,000 waiting). Each row also says whether the transaction had a
/// transaction id already ([`claim`] refuses one that had).
static LOCK_PARTITIONS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH candidates AS MATERIALIZED ( \
             SELECT c.partition FROM outbox_partition_cursor c \
             WHERE EXISTS (SELECT 1 FROM ( \
                               SELECT 1 FROM outbox o \
                               WHERE o.id > c.released_id AND o.partition = c.partition AND {ABOVE} \
                               ORDER BY o.id LIMIT 1) first) \
                OR c.partition IN (SELECT partition FROM ({late}) l) \
                OR EXISTS (SELECT 1 FROM outbox_refused r \
                           WHERE r.set_aside_at IS NULL AND r.partition = c.partition) \
             ORDER BY random()) \
         SELECT partition, pg_current_xact_id_if_assigned() IS NOT NULL FROM candidates \
         WHERE pg_try_advisory_xact_lock($1, partition) LIMIT $2",
        late = late("o.partition", "outbox", "outbox_partition_cursor")
    )
});

/// Takes every claim partition no other relay holds (advisory lock `$1`,
/// partition), without asking which have something to send: for a relay
/// allowed all of them (the usual one relay per outbox), the probes of
/// [`LOCK_PARTITIONS_SQL`] (an index probe per claim partition and table
/// partition, in every batch) cost as much as the read itself, and a
/// partition with nothing to send just reads nothing.
static LOCK_ALL_PARTITIONS_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT p::int2, pg_current_xact_id_if_assigned() IS NOT NULL \
         FROM generate_series(0, {}) p WHERE pg_try_advisory_xact_lock($1, p)",
        PARTITIONS - 1
    )
});

/// `$1`: the claimed partitions; `$2`: new rows at most, and refused rows
/// at most. The cursor is read here, after the locks were taken (a read in
/// the locking statement could predate another relay's last move). Each
/// row comes with its source, the statement's snapshot, whether commits
/// wait for synchronous standbys ([`crate::standby`]), the server's
/// identity, and the batch's transaction id: taken here, as the rows are
/// returned (after the snapshot; and only when there are rows, so an
/// empty poll commits nothing).
static READ_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH c AS (SELECT partition, released_snapshot, released_id \
                    FROM outbox_partition_cursor WHERE partition = ANY($1)), \
         fresh AS ( \
             SELECT {ROW_COLUMNS}, 'fresh' AS source FROM outbox o \
             WHERE o.id > (SELECT min(released_id) FROM c) AND o.partition = ANY($1) AND {ABOVE} \
             ORDER BY o.id LIMIT $2), \
         late AS ({late}), \
         retry AS ( \
             SELECT {ROW_COLUMNS}, 'retry' AS source FROM outbox_refused o \
             WHERE o.set_aside_at IS NULL AND o.partition = ANY($1) \
             ORDER BY o.id LIMIT $2) \
         SELECT *, pg_current_snapshot()::text, {STANDBYS_SQL}, {SERVER_SQL}, \
             pg_current_xact_id()::text FROM ( \
             SELECT * FROM fresh UNION ALL SELECT * FROM late UNION ALL SELECT * FROM retry) b \
         ORDER BY id",
        late = late(&format!("{ROW_COLUMNS}, 'late' AS source"), "outbox", "c")
    )
});

/// Moves the cursor of the claimed partitions `$1`: the largest new id
/// read `$3`, and the read's snapshot with every transaction id from its
/// xmax below the batch's own listed `$2` ([`super::snapshot`]). Another
/// relay's partitions keep theirs: computed from the row as it is when
/// this update gets it.
const ADVANCE_SQL: &str = "\
    UPDATE outbox_relay_cursor SET \
        released_snapshot = ARRAY( \
            SELECT CASE WHEN i - 1 = ANY($1::int2[]) THEN $2::text::pg_snapshot ELSE released_snapshot[i] END \
            FROM generate_subscripts(released_snapshot, 1) i ORDER BY i), \
        released_id = ARRAY( \
            SELECT CASE WHEN i - 1 = ANY($1::int2[]) THEN GREATEST(released_id[i], $3) ELSE released_id[i] END \
            FROM generate_subscripts(released_id, 1) i ORDER BY i)";

/// Counts a refusal of each row `$1` (with its reason `$2`): a first
/// refusal copies the row into `outbox_refused`, a later one counts up; a
/// row refused `$3` times is set aside.
const RECORD_REFUSAL_SQL: &str = "\
    WITH r AS (SELECT * FROM unnest($1::int8[], $2::text[]) AS r(id, reason)), \
    again AS ( \
        UPDATE outbox_refused f SET attempts = f.attempts + 1, last_error = r.reason, \
            set_aside_at = CASE WHEN f.attempts + 1 >= $3 THEN now() END \
        FROM r WHERE f.id = r.id \
        RETURNING f.id, f.set_aside_at IS NOT NULL, f.attempts, f.event_type, r.reason), \
    first AS ( \
        INSERT INTO outbox_refused (id, message_id, aggregate_id, partition, event_type, \
            payload, created_at, queue, attempts, last_error, set_aside_at) \
        SELECT o.id, o.message_id, o.aggregate_id, o.partition, o.event_type, o.payload, \
            o.created_at, o.queue, 1, r.reason, CASE WHEN 1 >= $3 THEN now() END \
        FROM r JOIN outbox o ON o.id = r.id \
        WHERE NOT EXISTS (SELECT 1 FROM outbox_refused f WHERE f.id = r.id) \
        RETURNING id, set_aside_at IS NOT NULL, attempts, event_type, last_error) \
    SELECT * FROM again UNION ALL SELECT * FROM first";

/// Refused rows the broker took this time: they are sent.
const FORGET_REFUSALS_SQL: &str =
    "DELETE FROM outbox_refused WHERE id = ANY($1) AND set_aside_at IS NULL";

/// What one claim read.
#[derive(Debug, Default)]
pub struct Claim {
    /// Every row to send, in id order.
    pub rows: Vec<OutboxRow>,
    /// Of those, the ids read from `outbox_refused` (another attempt).
    pub(crate) retries: Vec<i64>,
    /// Where the cursor of the claimed partitions goes once the batch is
    /// confirmed.
    pub(crate) advance: Option<Advance>,
    /// Whether commits wait for synchronous standbys: then a standby must
    /// have the rows before they leave ([`crate::standby`]).
    pub(crate) standbys: bool,
    /// The server the rows were read from ([`crate::standby::SERVER_SQL`]).
    pub(crate) server: String,
}

/// A cursor position to write.
#[derive(Debug)]
pub(crate) struct Advance {
    partitions: Vec<i16>,
    /// The read's snapshot, listing every id from its xmax below the
    /// batch's own.
    snapshot: String,
    released_id: i64,
}

/// Locks up to `max_partitions` claim partitions and reads what they have
/// to send: up to `max_rows` new rows, every late row, up to `max_rows`
/// refused rows due again. It must be the first thing `tx` does that
/// takes a transaction id: the cursor it leaves lists the transactions
/// from the read's snapshot up to the batch's own id, which must come
/// after that snapshot (a transaction that had an id already is refused).
pub async fn claim(tx: &Transaction<'_>, max_partitions: i64, max_rows: i64) -> Result<Claim> {
    tx.batch_execute(GENERIC_PLANS_SQL).await?;
    let locked = if max_partitions >= i64::from(PARTITIONS) {
        let lock = tx.prepare_cached(&LOCK_ALL_PARTITIONS_SQL).await?;
        tx.query(&lock, &[&CLAIM_LOCK]).await?
    } else {
        let lock = tx.prepare_cached(&LOCK_PARTITIONS_SQL).await?;
        tx.query(&lock, &[&CLAIM_LOCK, &max_partitions]).await?
    };
    let mut partitions = Vec::with_capacity(locked.len());
    for row in &locked {
        if row.try_get::<_, bool>(1)? {
            return Err(crate::Error::Invalid(
                "a relay's claim must come before anything that takes a transaction id in its transaction".into(),
            ));
        }
        partitions.push(row.try_get::<_, i16>(0)?);
    }
    if partitions.is_empty() {
        return Ok(Claim::default());
    }
    let read = tx.prepare_cached(&READ_SQL).await?;
    let rows = tx.query(&read, &[&partitions, &max_rows]).await?;
    let mut claim = Claim::default();
    let mut largest_new = 0;
    for row in &rows {
        let outbox_row = OutboxRow::from_row(row)?;
        match row.try_get::<_, &str>(7)? {
            "retry" => claim.retries.push(outbox_row.id),
            "fresh" => largest_new = largest_new.max(outbox_row.id),
            _ => {}
        }
        claim.rows.push(outbox_row);
    }
    if let Some(first) = rows.first() {
        claim.standbys = first.try_get(9)?;
        claim.server = first.try_get(10)?;
        claim.advance = Some(Advance {
            partitions,
            snapshot: super::snapshot::listing(first.try_get(8)?, first.try_get(11)?)?,
            released_id: largest_new,
        });
    }
    Ok(claim)
}

/// The plan of each statement a batch runs before it publishes, as
/// PostgreSQL runs it for the relay (generic, prepared, keyed access),
/// with its buffers (`EXPLAIN (ANALYZE, BUFFERS)`), for claims of all
/// sixteen partitions and of `max_rows` rows; in a transaction rolled
/// back after. For `perf relay-plans`.
pub async fn plans(
    client: &mut tokio_postgres::Client,
    max_rows: i64,
) -> Result<Vec<(&'static str, String)>> {
    let all: Vec<i16> = (0..PARTITIONS as i16).collect();
    let partitions = format!(
        "'{{{}}}'",
        all.iter().map(i16::to_string).collect::<Vec<_>>().join(",")
    );
    let statements: [(&'static str, &str, String); 3] = [
        (
            "lock every partition",
            &LOCK_ALL_PARTITIONS_SQL,
            format!("{CLAIM_LOCK}"),
        ),
        (
            "lock partitions with something to send",
            &LOCK_PARTITIONS_SQL,
            format!("{CLAIM_LOCK}, 16"),
        ),
        ("read", &READ_SQL, format!("{partitions}, {max_rows}")),
    ];
    let tx = client.transaction().await?;
    tx.batch_execute(
        "SET LOCAL plan_cache_mode = force_generic_plan; SET LOCAL enable_seqscan = off; \
         SET LOCAL jit = off; SET LOCAL max_parallel_workers_per_gather = 0",
    )
    .await?;
    let mut plans = Vec::new();
    for (n, (name, sql, arguments)) in statements.iter().enumerate() {
        tx.batch_execute(&format!("PREPARE relay_plan_{n} AS {sql}"))
            .await?;
        let lines = tx
            .query(
                &format!("EXPLAIN (ANALYZE, BUFFERS) EXECUTE relay_plan_{n}({arguments})"),
                &[],
            )
            .await?;
        let text = lines
            .iter()
            .map(|line| line.try_get::<_, String>(0))
            .collect::<std::result::Result<Vec<_>, _>>()?
            .join("\n");
        plans.push((*name, text));
        tx.batch_execute(&format!("DEALLOCATE relay_plan_{n}"))
            .await?;
    }
    tx.rollback().await?;
    Ok(plans)
}

/// Moves the claimed partitions' cursor past what the claim read.
pub(crate) async fn advance(tx: &Transaction<'_>, advance: &Advance) -> Result<()> {
    let statement = tx.prepare_cached(ADVANCE_SQL).await?;
    tx.execute(
        &statement,
        &[&advance.partitions, &advance.snapshot, &advance.released_id],
    )
    .await?;
    Ok(())
}

/// Forgets the refusals of rows the broker took on another attempt.
pub(crate) async fn forget_refusals(tx: &Transaction<'_>, ids: &[i64]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let statement = tx.prepare_cached(FORGET_REFUSALS_SQL).await?;
    tx.execute(&statement, &[&ids]).await?;
    Ok(())
}

/// Records refusals; returns how many rows were set aside by this call.
pub(crate) async fn record_refusals(
    tx: &Transaction<'_>,
    refused: &[(i64, String)],
    max_attempts: i32,
) -> Result<usize> {
    if refused.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = refused.iter().map(|(id, _)| *id).collect();
    let reasons: Vec<&str> = refused.iter().map(|(_, reason)| reason.as_str()).collect();
    let statement = tx.prepare_cached(RECORD_REFUSAL_SQL).await?;
    let rows = tx
        .query(&statement, &[&ids, &reasons, &max_attempts])
        .await?;
    let mut set_aside = 0;
    for row in rows {
        let (id, aside, attempts, event_type, reason): (i64, bool, i32, String, String) = (
            row.try_get(0)?,
            row.try_get(1)?,
            row.try_get(2)?,
            row.try_get(3)?,
            row.try_get(4)?,
        );
        if aside {
            set_aside += 1;
            tracing::warn!(outbox_id = id, %event_type, attempts, %reason, "outbox row refused by the broker and set aside; `outbox replay --from-id {id} --to-id {id}` once fixed");
        } else {
            tracing::warn!(outbox_id = id, %event_type, attempts, max_attempts, %reason, "outbox row refused by the broker while its neighbours passed");
        }
    }
    Ok(set_aside)
}
