//! The snapshot a cursor keeps: the one its batch's read ran under, with
//! every transaction id from that snapshot's xmax up to the batch's own
//! listed as in progress. It sees exactly what the read saw, and its list
//! holds every transaction that may still have a row below the cursor
//! (docs/ARCHITECTURE.md, "Nothing skipped"). Made here, from the text of
//! the two (`xmin:xmax:xip,...`, PostgreSQL's `pg_snapshot` format): in
//! SQL it cost the server a tenth of a millisecond per batch.

use crate::{Error, Result};

/// `seen` (a `pg_snapshot` as text) with every id from its xmax below
/// `reader` (the batch's transaction id, taken after `seen`) listed.
pub(crate) fn listing(seen: &str, reader: &str) -> Result<String> {
    let malformed = || {
        Error::Invalid(format!(
            "not a snapshot and a transaction id: {seen} {reader}"
        ))
    };
    let mut parts = seen.splitn(3, ':');
    let (Some(xmin), Some(xmax), Some(xip)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(malformed());
    };
    let number = |text: &str| text.parse::<u64>().map_err(|_| malformed());
    let (xmin, xmax, reader) = (number(xmin)?, number(xmax)?, number(reader)?);
    let mut listed = xip
        .split(',')
        .filter(|id| !id.is_empty())
        .map(number)
        .collect::<Result<Vec<u64>>>()?;
    listed.extend(xmax..reader);
    let xmax = xmax.max(reader);
    let listed: Vec<String> = listed.iter().map(u64::to_string).collect();
    Ok(format!("{xmin}:{xmax}:{}", listed.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ids_from_xmax_below_the_reader_are_listed_after_the_running_ones() {
        assert_eq!(
            listing("100:105:100,102", "108").unwrap(),
            "100:108:100,102,105,106,107"
        );
    }

    #[test]
    fn a_reader_at_xmax_lists_nothing_more() {
        assert_eq!(listing("29738:29738:", "29738").unwrap(), "29738:29738:");
        assert_eq!(listing("7:9:7", "9").unwrap(), "7:9:7");
    }

    #[test]
    fn the_issues_snapshot_lists_the_transaction_past_its_xmax() {
        // A took 29737, B 29738, A committed: B is past xmax, in no list.
        assert_eq!(
            listing("29738:29738:", "29739").unwrap(),
            "29738:29739:29738"
        );
    }

    #[test]
    fn what_is_not_a_snapshot_is_refused() {
        assert!(listing("100:105", "108").is_err());
        assert!(listing("100:105:x", "108").is_err());
        assert!(listing("100:105:", "-1").is_err());
    }
}
