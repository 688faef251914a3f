//! What is in an outbox: rows waiting, how old the oldest is, rows set
//! aside, and what went out lately. Read by `outbox stats` and kept in the
//! outbox gauges of `/metrics` ([`keep_gauges`]).

use std::time::Duration;

use deadpool_postgres::Pool;
use platform::shutdown::Signal;
use time::OffsetDateTime;
use tokio_postgres::Client;

use crate::Result;
use crate::metrics::RelayMetrics;

/// How often [`keep_gauges`] reads the outbox.
pub const GAUGE_INTERVAL: Duration = Duration::from_secs(2);

/// Rows still to send.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pending {
    pub rows: i64,
    /// Age of the oldest unsent row; 0 when there is none.
    pub oldest_age_seconds: f64,
    /// Rows set aside after repeated refusals (`outbox_refused`).
    pub set_aside: i64,
}

/// The whole picture, for operators.
#[derive(Debug, Clone)]
pub struct Stats {
    pub pending: Pending,
    pub oldest_pending_at: Option<OffsetDateTime>,
    pub published_last_minute: i64,
    pub total_rows: i64,
}

/// The relay's cursors find pending rows without reading the rest
/// (`outbox_pending`: new ids above each cursor, late rows by xid, refused
/// rows due again), however large the table is.
const PENDING_SQL: &str = "\
    SELECT count(*), min(created_at), \
        COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 \
    FROM outbox_pending";
const SET_ASIDE_SQL: &str = "SELECT count(*) FROM outbox_refused WHERE set_aside_at IS NOT NULL";
/// Rows written in the last minute, less those still pending: what the
/// relays sent of the last minute's rows (time partitions bound the scan).
const SENT_LAST_MINUTE_SQL: &str = "\
    SELECT (SELECT count(*) FROM outbox WHERE created_at > now() - interval '1 minute') \
         - (SELECT count(*) FROM outbox_pending WHERE created_at > now() - interval '1 minute')";
/// An estimate from the planner's statistics, summed over the time
/// partitions: exact counts of a large table are a full scan.
const TOTAL_ESTIMATE_SQL: &str = "\
    SELECT COALESCE(sum(GREATEST(c.reltuples, 0)), 0)::int8 FROM pg_inherits i \
    JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'outbox'::regclass";

pub async fn pending(client: &Client) -> Result<Pending> {
    Ok(pending_since(client).await?.0)
}

/// Keeps the outbox gauges of `metrics` (`outbox_pending`,
/// `outbox_lag_seconds`, `outbox_set_aside`) current until `shutdown`.
/// Once per process that owns the outbox, whether its relays run in it or
/// elsewhere: a backlog shows even when no relay runs at all. While the
/// outbox cannot be read (within [`GAUGE_INTERVAL`]) the gauges are NaN,
/// so that another process's current figure for the same outbox wins.
pub async fn keep_gauges(pool: Pool, metrics: RelayMetrics, shutdown: Signal) {
    while !shutdown.is_cancelled() {
        let read = async {
            let client = pool.get().await.map_err(crate::Error::from)?;
            pending(&client).await
        };
        tokio::select! {
            read = tokio::time::timeout(GAUGE_INTERVAL, read) => match read {
                Ok(Ok(pending)) => metrics.observe_pending(&pending),
                Ok(Err(error)) => {
                    tracing::debug!(%error, "outbox gauges not updated");
                    metrics.forget_pending();
                }
                Err(_) => metrics.forget_pending(),
            },
            _ = shutdown.cancelled() => return,
        }
        platform::shutdown::sleep(&shutdown, GAUGE_INTERVAL).await;
    }
}

/// What is pending, and when the oldest pending row was written.
async fn pending_since(client: &Client) -> Result<(Pending, Option<OffsetDateTime>)> {
    let row = client.query_one(PENDING_SQL, &[]).await?;
    let set_aside = client.query_one(SET_ASIDE_SQL, &[]).await?;
    let pending = Pending {
        rows: row.try_get(0)?,
        oldest_age_seconds: row.try_get(2)?,
        set_aside: set_aside.try_get(0)?,
    };
    Ok((pending, row.try_get(1)?))
}

pub async fn collect(client: &Client) -> Result<Stats> {
    let (pending, oldest_pending_at) = pending_since(client).await?;
    let published = client.query_one(SENT_LAST_MINUTE_SQL, &[]).await?;
    let total = client.query_one(TOTAL_ESTIMATE_SQL, &[]).await?;
    Ok(Stats {
        pending,
        oldest_pending_at,
        published_last_minute: published.try_get(0)?,
        total_rows: total.try_get(0)?,
    })
}
