//! What an operator does with dead letters (`outbox dead-letters`): list
//! them, read one in full, send some back to their queue, purge some.
//!
//! A requeue goes out through the service's own outbox, in one
//! transaction with marking the dead letters requeued: each event becomes
//! an outbox row for its own queue only (published through the default
//! exchange, never to an exchange other queues are bound to), under its
//! original id, so the consumer's inbox applies it at most once however
//! often it arrives. Only events can be requeued; a body that is not one
//! would only be dead-lettered again.

use time::OffsetDateTime;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::Result;
use crate::audit::{self, Action};
use crate::envelope::Envelope;
use crate::writer::partition_of;

/// A dead letter as an operator sees it.
#[derive(Debug, Clone)]
pub struct DeadLetterRow {
    pub id: i64,
    pub queue: String,
    pub message_id: Option<Uuid>,
    /// The id of the AMQP message it came in, where that was recorded.
    pub transport_id: Option<String>,
    pub event_type: Option<String>,
    pub aggregate_id: Option<String>,
    pub reason: String,
    pub source: String,
    pub count: i32,
    pub first_at: OffsetDateTime,
    pub last_at: OffsetDateTime,
    pub requeued_at: Option<OffsetDateTime>,
    pub body: String,
}

const COLUMNS: &str = "id, queue, message_id, event_type, aggregate_id, reason, source, count, \
                       first_at, last_at, requeued_at, body, transport_id";

impl DeadLetterRow {
    fn from_row(row: &tokio_postgres::Row) -> Result<Self> {
        Ok(DeadLetterRow {
            id: row.try_get(0)?,
            queue: row.try_get(1)?,
            message_id: row.try_get(2)?,
            event_type: row.try_get(3)?,
            aggregate_id: row.try_get(4)?,
            reason: row.try_get(5)?,
            source: row.try_get(6)?,
            count: row.try_get(7)?,
            first_at: row.try_get(8)?,
            last_at: row.try_get(9)?,
            requeued_at: row.try_get(10)?,
            body: row.try_get(11)?,
            transport_id: row.try_get(12)?,
        })
    }
}

/// Which dead letters a command acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    Ids(Vec<i64>),
    EventType(String),
}

impl std::fmt::Display for Selection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selection::All => f.write_str("--all"),
            Selection::Ids(ids) => {
                let ids: Vec<String> = ids.iter().map(|id| format!("--id {id}")).collect();
                f.write_str(&ids.join(" "))
            }
            Selection::EventType(event_type) => write!(f, "--type {event_type}"),
        }
    }
}

impl Selection {
    /// `$1`: all; `$2`: ids; `$3`: event type.
    const SQL: &'static str = "($1::bool OR id = ANY($2) OR event_type = $3)";

    fn params(&self) -> (bool, Vec<i64>, Option<&str>) {
        match self {
            Selection::All => (true, Vec::new(), None),
            Selection::Ids(ids) => (false, ids.clone(), None),
            Selection::EventType(event_type) => (false, Vec::new(), Some(event_type.as_str())),
        }
    }
}

/// Up to `limit` dead letters, oldest first; requeued ones too if asked.
pub async fn list(
    client: &Client,
    include_requeued: bool,
    limit: i64,
) -> Result<Vec<DeadLetterRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM dead_letters WHERE ($1 OR requeued_at IS NULL) ORDER BY id LIMIT $2"
    );
    let rows = client.query(&sql, &[&include_requeued, &limit]).await?;
    rows.iter().map(DeadLetterRow::from_row).collect()
}

/// One dead letter in full.
pub async fn show(client: &Client, id: i64) -> Result<Option<DeadLetterRow>> {
    let sql = format!("SELECT {COLUMNS} FROM dead_letters WHERE id = $1");
    client
        .query_opt(&sql, &[&id])
        .await?
        .as_ref()
        .map(DeadLetterRow::from_row)
        .transpose()
}

/// What a requeue did (or, in a dry run, would do).
#[derive(Debug, Clone, Default)]
pub struct RequeueReport {
    /// The dead letters sent back (or to be sent back).
    pub requeued: Vec<DeadLetterRow>,
    /// Selected but not events (no envelope to send): left as they are.
    pub not_events: Vec<DeadLetterRow>,
}

/// Outbox rows for one queue each, under the events' own ids (appended:
/// an earlier requeue of the same event goes out again as a new row).
const REQUEUE_SQL: &str = "\
    INSERT INTO outbox (message_id, aggregate_id, partition, event_type, payload, queue) \
    SELECT m, a, p, t, y::jsonb, q \
    FROM unnest($1::uuid[], $2::text[], $3::int2[], $4::text[], $5::text[], $6::text[]) \
        AS r(m, a, p, t, y, q)";

/// Sends the selected dead letters (not requeued yet) back to their
/// queues through the outbox, and marks them requeued, recording who did
/// (`account`) in the same transaction; with `dry_run`, only says which.
pub async fn requeue(
    client: &mut Client,
    selection: &Selection,
    dry_run: bool,
    account: &str,
) -> Result<RequeueReport> {
    let tx = client.transaction().await?;
    let (all, ids, event_type) = selection.params();
    let sql = format!(
        "SELECT {COLUMNS} FROM dead_letters WHERE requeued_at IS NULL AND {} ORDER BY id FOR UPDATE",
        Selection::SQL
    );
    let rows = tx.query(&sql, &[&all, &ids, &event_type]).await?;
    let mut report = RequeueReport::default();
    let mut events = Vec::new();
    for row in rows {
        let row = DeadLetterRow::from_row(&row)?;
        match serde_json::from_str::<Envelope>(&row.body) {
            Ok(envelope) if row.message_id.is_some() => {
                events.push((envelope, row.queue.clone()));
                report.requeued.push(row);
            }
            _ => report.not_events.push(row),
        }
    }
    if dry_run || events.is_empty() {
        return Ok(report);
    }
    let ids: Vec<Uuid> = events.iter().map(|(e, _)| e.id).collect();
    let aggregates: Vec<&str> = events
        .iter()
        .map(|(e, _)| e.aggregate_id.as_str())
        .collect();
    let partitions: Vec<i16> = events
        .iter()
        .map(|(e, _)| partition_of(&e.aggregate_id))
        .collect();
    let types: Vec<&str> = events.iter().map(|(e, _)| e.event_type.as_str()).collect();
    let payloads: Vec<&str> = events.iter().map(|(e, _)| e.payload.get()).collect();
    let queues: Vec<&str> = events.iter().map(|(_, queue)| queue.as_str()).collect();
    let params: [&(dyn ToSql + Sync); 6] =
        [&ids, &aggregates, &partitions, &types, &payloads, &queues];
    tx.execute(REQUEUE_SQL, &params).await?;
    let requeued: Vec<i64> = report.requeued.iter().map(|row| row.id).collect();
    tx.execute(
        "UPDATE dead_letters SET requeued_at = now() WHERE id = ANY($1)",
        &[&requeued],
    )
    .await?;
    let count = requeued.len() as u64;
    audit::record(&tx, Action::Requeue, &selection.to_string(), count, account).await?;
    tx.commit().await?;
    Ok(report)
}

/// Deletes the selected dead letters, recording who did (`account`) in
/// the same transaction; returns how many went.
pub async fn purge(client: &mut Client, selection: &Selection, account: &str) -> Result<u64> {
    let tx = client.transaction().await?;
    let (all, ids, event_type) = selection.params();
    let sql = format!("DELETE FROM dead_letters WHERE {}", Selection::SQL);
    let purged = tx.execute(&sql, &[&all, &ids, &event_type]).await?;
    if purged > 0 {
        audit::record(&tx, Action::Purge, &selection.to_string(), purged, account).await?;
    }
    tx.commit().await?;
    Ok(purged)
}
