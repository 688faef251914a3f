//! Query-string parameters (`?limit=10&after=42`), percent-decoded.

/// The value of the first parameter called `name`, decoded; `None` when it
/// is absent. A value that does not decode to UTF-8 is returned lossily,
/// so the caller's validation rejects it with a message.
pub fn param(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key) == name).then(|| decode(value))
        })
        .next()
}

/// Names of all parameters, decoded, for rejecting unknown ones.
pub fn names(query: Option<&str>) -> Vec<String> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| decode(pair.split_once('=').map_or(pair, |(key, _)| key)))
        .collect()
}

/// An integer parameter within `range`, `default` when absent; the error
/// says what is expected.
pub fn integer(
    query: Option<&str>,
    name: &str,
    default: i64,
    range: std::ops::RangeInclusive<i64>,
) -> Result<i64, String> {
    match param(query, name) {
        None => Ok(default),
        Some(text) => match text.parse::<i64>() {
            Ok(value) if range.contains(&value) => Ok(value),
            _ => Err(format!(
                "{name} must be a whole number from {} to {}",
                range.start(),
                range.end()
            )),
        },
    }
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'+' => out.push(b' '),
            b'%' => match hex_pair(bytes.get(at + 1..at + 3)) {
                Some(byte) => {
                    out.push(byte);
                    at += 2;
                }
                None => out.push(b'%'),
            },
            other => out.push(other),
        }
        at += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_pair(pair: Option<&[u8]>) -> Option<u8> {
    let pair = pair?;
    let high = (pair[0] as char).to_digit(16)?;
    let low = (pair[1] as char).to_digit(16)?;
    Some((high * 16 + low) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_decodes_parameters() {
        let query = Some("limit=10&after=4%32&status=PEND+ING&flag");
        assert_eq!(param(query, "limit").as_deref(), Some("10"));
        assert_eq!(param(query, "after").as_deref(), Some("42"));
        assert_eq!(param(query, "status").as_deref(), Some("PEND ING"));
        assert_eq!(param(query, "flag").as_deref(), Some(""));
        assert_eq!(param(query, "missing"), None);
        assert_eq!(names(query), ["limit", "after", "status", "flag"]);
    }

    #[test]
    fn integers_are_checked_against_their_range() {
        assert_eq!(integer(Some("limit=5"), "limit", 50, 1..=100), Ok(5));
        assert_eq!(integer(None, "limit", 50, 1..=100), Ok(50));
        assert!(integer(Some("limit=0"), "limit", 50, 1..=100).is_err());
        assert!(integer(Some("limit=x"), "limit", 50, 1..=100).is_err());
    }

    #[test]
    fn broken_escapes_are_kept_literally() {
        assert_eq!(param(Some("a=%zz%4"), "a").as_deref(), Some("%zz%4"));
    }
}
