//! A decoded HTTP request: one buffer holding the request head, with
//! offsets into it, and the body.
//!
//! Keeping the raw head and offsets (instead of a `String` per header) costs
//! one allocation per request however many headers it carries.

use std::net::IpAddr;
use std::ops::Range;

use bytes::Bytes;

/// Longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 200;

/// An `Idempotency-Key` header that is not 1 to 200 visible ASCII characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Idempotency-Key is 1 to 200 visible ASCII characters")]
pub struct InvalidIdempotencyKey;

/// One request as the connection loop hands it to a [`crate::Service`].
#[derive(Debug, Clone)]
pub struct Request {
    /// The request head exactly as received, up to and including the blank line.
    pub(crate) head: Bytes,
    pub(crate) method: Range<usize>,
    pub(crate) path: Range<usize>,
    pub(crate) query: Option<Range<usize>>,
    pub(crate) headers: Vec<(Range<usize>, Range<usize>)>,
    /// HTTP minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub(crate) minor_version: u8,
    pub(crate) body: Bytes,
    /// The address of the connection's other end (a proxy's, behind one).
    pub(crate) peer: Option<IpAddr>,
}

impl Request {
    /// The method, as sent (`GET`, `POST`, …).
    pub fn method(&self) -> &str {
        self.text(&self.method)
    }

    /// The path without the query string.
    pub fn path(&self) -> &str {
        self.text(&self.path)
    }

    /// The query string without the leading `?`, if there was one.
    pub fn query(&self) -> Option<&str> {
        self.query.as_ref().map(|range| self.text(range))
    }

    /// The value of the first header with this name (compared ignoring case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| self.head[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, value)| &self.head[value.clone()])
    }

    /// The values of every header with this name, in order.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| self.head[n.clone()].eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, value)| &self.head[value.clone()])
    }

    /// The address of the connection's other end, when it came over one.
    pub fn peer(&self) -> Option<IpAddr> {
        self.peer
    }

    /// The same request as if it came from `peer` (tests).
    pub fn with_peer(mut self, peer: IpAddr) -> Self {
        self.peer = Some(peer);
        self
    }

    /// The value of a header as text, if present and valid UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name)
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    /// The `Idempotency-Key` header: `None` when absent, the key when it is
    /// 1 to 200 visible ASCII characters, an error otherwise.
    pub fn idempotency_key(&self) -> Result<Option<&str>, InvalidIdempotencyKey> {
        let Some(value) = self.header("idempotency-key") else {
            return Ok(None);
        };
        let valid = !value.is_empty()
            && value.len() <= MAX_IDEMPOTENCY_KEY
            && value.iter().all(u8::is_ascii_graphic);
        match std::str::from_utf8(value) {
            Ok(key) if valid => Ok(Some(key)),
            _ => Err(InvalidIdempotencyKey),
        }
    }

    /// Whether the body may be read as JSON: `Content-Type` is
    /// `application/json` (with any parameters), or absent.
    pub fn declares_json(&self) -> bool {
        match self.header_str("content-type") {
            None => true,
            Some(value) => value
                .split(';')
                .next()
                .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("application/json")),
        }
    }

    /// The request body, already de-chunked when it was sent chunked.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Whether the client asked to keep the connection open after this one.
    pub fn keep_alive(&self) -> bool {
        let connection = self.header("connection");
        let has = |token: &str| {
            connection.is_some_and(|value| {
                value
                    .split(|b| *b == b',')
                    .any(|part| part.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
            })
        };
        if self.minor_version == 0 {
            has("keep-alive")
        } else {
            !has("close")
        }
    }

    /// Builds a request from parts; for tests and benchmarks of handlers
    /// that do not go through a socket.
    pub fn from_parts(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Self {
        let mut head = Vec::new();
        let mut push = |text: &str| {
            let start = head.len();
            head.extend_from_slice(text.as_bytes());
            start..head.len()
        };
        let method = push(method);
        push(" ");
        let (path_text, query_text) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        let path = push(path_text);
        let query = query_text.map(|query| {
            push("?");
            push(query)
        });
        push(" HTTP/1.1\r\n");
        let headers = headers
            .iter()
            .map(|(name, value)| {
                let name = push(name);
                push(": ");
                let value = push(value);
                push("\r\n");
                (name, value)
            })
            .collect();
        push("\r\n");
        Request {
            head: Bytes::from(head),
            method,
            path,
            query,
            headers,
            minor_version: 1,
            body: Bytes::copy_from_slice(body),
            peer: None,
        }
    }

    fn text(&self, range: &Range<usize>) -> &str {
        // The decoder only records ranges that httparse validated as tokens
        // or URI characters, all ASCII; an empty string is the safe fallback.
        std::str::from_utf8(&self.head[range.clone()]).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_parts_exposes_each_part() {
        let request = Request::from_parts(
            "POST",
            "/orders?limit=5",
            &[
                ("Content-Type", "application/json"),
                ("Connection", "close"),
            ],
            b"{}",
        );
        assert_eq!(request.method(), "POST");
        assert_eq!(request.path(), "/orders");
        assert_eq!(request.query(), Some("limit=5"));
        assert_eq!(request.header_str("content-type"), Some("application/json"));
        assert_eq!(request.body().as_ref(), b"{}");
        assert!(!request.keep_alive());
        assert!(request.declares_json());
        let text = Request::from_parts("POST", "/", &[("content-type", "text/plain")], b"");
        assert!(!text.declares_json());
        assert!(Request::from_parts("POST", "/", &[], b"").declares_json());
    }

    #[test]
    fn idempotency_keys_are_short_and_visible() {
        let with = |key: &str| Request::from_parts("POST", "/", &[("Idempotency-Key", key)], b"");
        assert_eq!(with("abc-1").idempotency_key(), Ok(Some("abc-1")));
        assert_eq!(
            Request::from_parts("POST", "/", &[], b"").idempotency_key(),
            Ok(None)
        );
        assert!(with("").idempotency_key().is_err());
        assert!(with(&"k".repeat(201)).idempotency_key().is_err());
        assert!(with("has space").idempotency_key().is_err());
        assert!(with("ключ").idempotency_key().is_err());
    }

    #[test]
    fn http11_keeps_alive_unless_told_to_close() {
        let request = Request::from_parts("GET", "/", &[], b"");
        assert!(request.keep_alive());
        let request = Request::from_parts("GET", "/", &[("connection", "Upgrade, Close")], b"");
        assert!(!request.keep_alive());
    }
}
