//! Query-string parameters (`?limit=10&after=42`), percent-decoded.

use std::ops::RangeInclusive;

/// The value of the first parameter called `name`, decoded; `None` when it
/// is absent. A value that does not decode to UTF-8 is returned lossily,
/// so the caller's validation rejects it with a message.
pub fn param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// An integer parameter within `range`, `default` when absent; the error
/// says what is expected.
pub fn integer(
    query: Option<&str>,
    name: &str,
    default: i64,
    range: RangeInclusive<i64>,
) -> Result<i64, String> {
    match param(query, name) {
        None => Ok(default),
        Some(text) => integer_in(name, &text, range),
    }
}

/// `text` as an integer within `range`; the error names the parameter.
pub fn integer_in(name: &str, text: &str, range: RangeInclusive<i64>) -> Result<i64, String> {
    match text.parse::<i64>() {
        Ok(value) if range.contains(&value) => Ok(value),
        _ => Err(format!(
            "{name} must be a whole number from {} to {}",
            range.start(),
            range.end()
        )),
    }
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
        assert_eq!(param(None, "limit"), None);
    }

    #[test]
    fn integers_are_checked_against_their_range() {
        assert_eq!(integer(Some("limit=5"), "limit", 50, 1..=100), Ok(5));
        assert_eq!(integer(None, "limit", 50, 1..=100), Ok(50));
        assert!(integer(Some("limit=0"), "limit", 50, 1..=100).is_err());
        assert_eq!(
            integer(Some("limit=x"), "limit", 50, 1..=100),
            Err("limit must be a whole number from 1 to 100".into())
        );
    }

    #[test]
    fn broken_escapes_are_kept_literally() {
        assert_eq!(param(Some("a=%zz%4"), "a").as_deref(), Some("%zz%4"));
    }
}
