//! Replay: sends outbox rows again, published or not, for an operator who
//! needs a consumer to see events again (a consumer's store restored from
//! a backup, a set-aside row whose cause is fixed).
//!
//! Consumers dedupe by message id in their inbox, so replaying rows a
//! consumer already applied changes nothing there, as long as its inbox
//! still holds those ids: rows older than the consumer's inbox window
//! ([`count_older_than`]) are replayed only when the operator insists.
//! Rows are read from the outbox's time partitions still kept, and from
//! the set-aside rows (kept apart, whatever their age). A replayed
//! set-aside row that the broker confirms leaves the set-aside list.

use std::time::Duration;

use time::OffsetDateTime;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use crate::Result;
use crate::envelope::OutgoingMessage;
use crate::relay::{ConfirmOutcome, OutboxRow, Publisher, ROW_COLUMNS, pack};

/// Which rows to replay; every field narrows the selection.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    pub aggregate_id: Option<String>,
    pub event_type: Option<String>,
    pub from_id: Option<i64>,
    pub to_id: Option<i64>,
}

/// The filter as the flags that give it (`--since … --type …`), for the
/// record of operator actions.
impl std::fmt::Display for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        let time = |at: &OffsetDateTime| {
            at.format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| at.to_string())
        };
        if let Some(since) = &self.since {
            parts.push(format!("--since {}", time(since)));
        }
        if let Some(until) = &self.until {
            parts.push(format!("--until {}", time(until)));
        }
        if let Some(aggregate) = &self.aggregate_id {
            parts.push(format!("--aggregate {aggregate}"));
        }
        if let Some(event_type) = &self.event_type {
            parts.push(format!("--event-type {event_type}"));
        }
        if let Some(from) = self.from_id {
            parts.push(format!("--from-id {from}"));
        }
        if let Some(to) = self.to_id {
            parts.push(format!("--to-id {to}"));
        }
        if parts.is_empty() {
            parts.push("--all".to_owned());
        }
        f.write_str(&parts.join(" "))
    }
}

impl Filter {
    /// True when nothing narrows the selection: a replay of everything.
    pub fn is_unbounded(&self) -> bool {
        self.since.is_none()
            && self.until.is_none()
            && self.aggregate_id.is_none()
            && self.event_type.is_none()
            && self.from_id.is_none()
            && self.to_id.is_none()
    }

    fn params<'a>(&'a self, after_id: &'a i64) -> [&'a (dyn ToSql + Sync); 7] {
        [
            &self.since,
            &self.until,
            &self.aggregate_id,
            &self.event_type,
            &self.from_id,
            &self.to_id,
            after_id,
        ]
    }
}

const MATCHES: &str = "\
    ($1::timestamptz IS NULL OR created_at >= $1) \
    AND ($2::timestamptz IS NULL OR created_at < $2) \
    AND ($3::text IS NULL OR aggregate_id = $3) \
    AND ($4::text IS NULL OR event_type = $4) \
    AND ($5::int8 IS NULL OR id >= $5) \
    AND ($6::int8 IS NULL OR id <= $6) \
    AND id > $7";

/// What replay reads: the outbox, and set-aside rows whose time partition
/// is gone (the rest are in the outbox too).
const REPLAYABLE: &str = "( \
    SELECT id, message_id, aggregate_id, event_type, payload, created_at, queue FROM outbox \
    UNION ALL \
    SELECT id, message_id, aggregate_id, event_type, payload, created_at, queue \
    FROM outbox_refused r \
    WHERE r.set_aside_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM outbox x WHERE x.id = r.id))";

/// Rows the broker confirmed during a replay: a refused or set-aside row
/// is sent, and leaves `outbox_refused`.
const FORGET_REPLAYED_SQL: &str = "DELETE FROM outbox_refused WHERE id = ANY($1)";

/// How many matching rows were created before `window` ago: for a
/// consumer whose inbox window that is, their ids may have left its inbox,
/// and a replay could apply them twice.
pub async fn count_older_than(client: &Client, filter: &Filter, window: Duration) -> Result<i64> {
    let cutoff = OffsetDateTime::now_utc() - window;
    let older = Filter {
        until: Some(filter.until.map_or(cutoff, |until| until.min(cutoff))),
        ..filter.clone()
    };
    count(client, &older).await
}

/// How many rows match.
pub async fn count(client: &Client, filter: &Filter) -> Result<i64> {
    let sql = format!("SELECT count(*) FROM {REPLAYABLE} o WHERE {MATCHES}");
    let row = client.query_one(&sql, &filter.params(&0)).await?;
    Ok(row.try_get(0)?)
}

/// The next `limit` matching rows after id `after_id`, in id order.
pub async fn page(
    client: &Client,
    filter: &Filter,
    after_id: i64,
    limit: i64,
) -> Result<Vec<OutboxRow>> {
    let sql =
        format!("SELECT {ROW_COLUMNS} FROM {REPLAYABLE} o WHERE {MATCHES} ORDER BY id LIMIT $8");
    let mut params = filter.params(&after_id).to_vec();
    params.push(&limit);
    let rows = client.query(&sql, &params).await?;
    rows.iter().map(OutboxRow::from_row).collect()
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub sent: u64,
    pub refused: u64,
}

/// Sends every matching row to `exchange`, a page at a time, calling
/// `progress` with the rows handled so far.
pub async fn replay(
    client: &Client,
    publisher: &Publisher,
    exchange: &str,
    filter: &Filter,
    page_size: i64,
    mut progress: impl FnMut(u64),
) -> Result<ReplayReport> {
    let mut report = ReplayReport::default();
    let mut after_id = 0;
    loop {
        let rows = page(client, filter, after_id, page_size).await?;
        let Some(last) = rows.last() else {
            return Ok(report);
        };
        after_id = last.id;
        let (groups, unsendable) = pack(&rows, 1, usize::MAX);
        let messages = groups
            .iter()
            .map(|group| group.message())
            .collect::<std::result::Result<Vec<OutgoingMessage>, _>>()?;
        let outcomes = publisher.publish(exchange, &messages).await?;
        let mut confirmed: Vec<i64> = Vec::with_capacity(rows.len());
        for (group, outcome) in groups.iter().zip(outcomes) {
            match outcome {
                ConfirmOutcome::Confirmed => confirmed.extend(&group.row_ids),
                ConfirmOutcome::Refused(reason) => {
                    tracing::warn!(rows = ?group.row_ids, %reason, "replayed row refused");
                    report.refused += group.row_ids.len() as u64;
                }
            }
        }
        report.refused += unsendable.len() as u64;
        client.execute(FORGET_REPLAYED_SQL, &[&confirmed]).await?;
        report.sent += confirmed.len() as u64;
        progress(report.sent + report.refused);
    }
}
