//! What is in an outbox: rows waiting, how old the oldest is, rows set
//! aside, and what went out lately. Read by `outbox stats` and by the
//! relay's gauges.

use time::OffsetDateTime;
use tokio_postgres::Client;

use crate::Result;

/// Rows still to send.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pending {
    pub rows: i64,
    /// Age of the oldest unsent row; 0 when there is none.
    pub oldest_age_seconds: f64,
    /// Rows set aside after repeated refusals.
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

/// Matches the partial index `outbox_pending` exactly, so it reads only
/// unsent rows however large the table is.
const PENDING_SQL: &str = "\
    SELECT count(*), min(created_at), \
        COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 \
    FROM outbox WHERE published_at IS NULL AND set_aside_at IS NULL";
const SET_ASIDE_SQL: &str = "SELECT count(*) FROM outbox WHERE set_aside_at IS NOT NULL";
/// The created_at bound lets the BRIN index skip old rows.
const PUBLISHED_LAST_MINUTE_SQL: &str = "\
    SELECT count(*) FROM outbox \
    WHERE created_at > now() - interval '1 hour' AND published_at > now() - interval '1 minute'";
/// An estimate from the planner's statistics: exact counts of a large
/// table are a full scan.
const TOTAL_ESTIMATE_SQL: &str = "\
    SELECT GREATEST(reltuples, 0)::int8 FROM pg_class WHERE oid = 'outbox'::regclass";

pub async fn pending(client: &Client) -> Result<Pending> {
    Ok(pending_since(client).await?.0)
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
    let published = client.query_one(PUBLISHED_LAST_MINUTE_SQL, &[]).await?;
    let total = client.query_one(TOTAL_ESTIMATE_SQL, &[]).await?;
    Ok(Stats {
        pending,
        oldest_pending_at,
        published_last_minute: published.try_get(0)?,
        total_rows: total.try_get(0)?,
    })
}
