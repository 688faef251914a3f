//! The time slices as the catalog has them, and the arithmetic of slices:
//! their names, their bounds, which are missing ahead of now.

use std::time::Duration;

use time::OffsetDateTime;
use tokio_postgres::Client;

use super::{Slicing, Table};
use crate::Result;

/// One partition, as the catalog has it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Slice {
    pub(super) name: String,
    /// `None` for the partition of everything before the first slice.
    pub(super) lower: Option<OffsetDateTime>,
    pub(super) upper: OffsetDateTime,
    pub(super) detach_pending: bool,
    pub(super) frozen_xid_age: i64,
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

pub(super) async fn slices(client: &Client, table: Table) -> Result<Vec<Slice>> {
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

/// Outbox slices detached and not dropped yet (their last look was cut
/// short): tables beside the outbox named as its slices, no longer
/// partitions.
const DETACHED_OUTBOX_SLICES_SQL: &str = "\
    SELECT c.relname::text FROM pg_class c \
    WHERE c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = 'outbox'::regclass) \
      AND c.relkind = 'r' AND NOT c.relispartition \
      AND c.relname ~ '^outbox_(before_v3|[0-9]{8}_[0-9]{4})$' \
    ORDER BY c.relname";

pub(super) async fn detached_outbox_slices(client: &Client) -> Result<Vec<String>> {
    let rows = client.query(DETACHED_OUTBOX_SLICES_SQL, &[]).await?;
    rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
}

/// The name of `table`'s partition starting at `lower`:
/// `outbox_20261202_0315`.
pub(super) fn name_of(table: Table, lower: OffsetDateTime) -> String {
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

/// Where the slice made from `lower` at `slicing`'s length ends: at the
/// next multiple of the interval (a slice following one of another length
/// is shorter, to fall in line).
pub(super) fn end_of(lower: OffsetDateTime, slicing: &Slicing) -> OffsetDateTime {
    floor(lower, slicing.interval) + slicing.interval
}

/// The slices to make so that partitions cover `now` to `now + ahead`
/// without gaps after the last one `upper` ends (or from the slice of
/// `now`, when there is none or it ended before the retention window:
/// nothing can still be written that far back).
pub(super) fn missing(
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
        let next = end_of(from, slicing);
        made.push((from, next));
        from = next;
    }
    made
}

/// A time as PostgreSQL reads it back exactly.
pub(super) fn timestamp(at: OffsetDateTime) -> String {
    format!(
        "{}+00",
        at.to_offset(time::UtcOffset::UTC)
            .format(TIMESTAMP)
            .unwrap_or_default()
    )
}

const TIMESTAMP: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");

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
