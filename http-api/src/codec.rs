//! Turning bytes from a socket into [`Request`]s, within limits.
//!
//! The limits of docs/ARCHITECTURE.md ("The HTTP core") are kept here: a
//! head that grows without end, more headers than the parser's array, a
//! non-numeric `Content-Length`, chunked bodies. Every outcome is an
//! answer: a request, "need more bytes", or a [`Rejection`] with the status
//! to send before closing the connection. Nothing here panics on any input.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use crate::Request;
use crate::chunked::{self, ChunkedError};

/// The bounds a connection enforces on what a client sends.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request line plus headers; beyond it the client gets 431.
    pub max_head_bytes: usize,
    /// Largest body, declared or de-chunked; beyond it the client gets 413.
    pub max_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 16 * 1024,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// A request the server refuses; the connection closes after the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub code: &'static str,
    pub message: &'static str,
}

impl Rejection {
    const fn new(status: u16, code: &'static str, message: &'static str) -> Self {
        Rejection {
            status,
            code,
            message,
        }
    }
}

const HEAD_TOO_LARGE: Rejection = Rejection::new(
    431,
    "headers_too_large",
    "the request head is over the size limit",
);
const TOO_MANY_HEADERS: Rejection = Rejection::new(
    431,
    "headers_too_large",
    "the request has more headers than the limit",
);
const MALFORMED_HEAD: Rejection = Rejection::new(
    400,
    "malformed_request",
    "the request head is not valid HTTP/1.1",
);
const BAD_CONTENT_LENGTH: Rejection = Rejection::new(
    400,
    "malformed_request",
    "Content-Length is not a single decimal number",
);
const BODY_TOO_LARGE: Rejection = Rejection::new(
    413,
    "body_too_large",
    "the request body is over the size limit",
);
const AMBIGUOUS_LENGTH: Rejection = Rejection::new(
    400,
    "malformed_request",
    "a request may not carry both Content-Length and Transfer-Encoding",
);
const UNSUPPORTED_ENCODING: Rejection = Rejection::new(
    501,
    "unsupported_transfer_encoding",
    "only the chunked transfer encoding is supported",
);
const REPEATED_ENCODING: Rejection = Rejection::new(
    400,
    "malformed_request",
    "Transfer-Encoding may appear once",
);
const MALFORMED_CHUNKED: Rejection =
    Rejection::new(400, "malformed_request", "the chunked body is malformed");

/// Most headers one request may carry; beyond it the client gets 431.
/// The parser's slots live on the coroutine's stack (32 bytes each).
pub const MAX_HEADERS: usize = 64;

/// What the decoder made of the buffered bytes.
#[derive(Debug)]
pub enum Decoded {
    /// A whole request; its bytes have been taken from the buffer.
    Request(Request),
    /// Not enough bytes yet. `expects_continue` is set when the head is
    /// complete and the client waits for `100 Continue` before its body.
    Incomplete { expects_continue: bool },
    /// The bytes can never make an acceptable request.
    Reject(Rejection),
}

enum BodyFraming {
    Length(usize),
    Chunked,
}

struct Head {
    len: usize,
    method: Range<usize>,
    path: Range<usize>,
    query: Option<Range<usize>>,
    headers: Vec<(Range<usize>, Range<usize>)>,
    minor_version: u8,
    framing: BodyFraming,
    expects_continue: bool,
}

/// Decodes the first request in `buffer`, taking its bytes when complete.
pub fn decode(buffer: &mut BytesMut, limits: &Limits) -> Decoded {
    let head = match parse_head(buffer, limits) {
        Ok(Some(head)) => head,
        Ok(None) => {
            return Decoded::Incomplete {
                expects_continue: false,
            };
        }
        Err(rejection) => return Decoded::Reject(rejection),
    };
    let (body, body_wire_len) = match head.framing {
        BodyFraming::Length(len) if buffer.len() < head.len + len => {
            return Decoded::Incomplete {
                expects_continue: head.expects_continue,
            };
        }
        BodyFraming::Length(len) => (None, len),
        BodyFraming::Chunked => match chunked::decode(&buffer[head.len..], limits.max_body_bytes) {
            Ok(Some((body, consumed))) => (Some(Bytes::from(body)), consumed),
            Ok(None) => {
                return Decoded::Incomplete {
                    expects_continue: head.expects_continue,
                };
            }
            Err(ChunkedError::TooLarge) => return Decoded::Reject(BODY_TOO_LARGE),
            Err(ChunkedError::Malformed) => return Decoded::Reject(MALFORMED_CHUNKED),
        },
    };
    let raw = buffer.split_to(head.len + body_wire_len).freeze();
    let body = body.unwrap_or_else(|| raw.slice(head.len..));
    Decoded::Request(Request {
        head: raw.slice(..head.len),
        method: head.method,
        path: head.path,
        query: head.query,
        headers: head.headers,
        minor_version: head.minor_version,
        body,
        peer: None,
    })
}

fn parse_head(buffer: &[u8], limits: &Limits) -> Result<Option<Head>, Rejection> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut slots);
    let len = match parsed.parse(buffer) {
        Ok(httparse::Status::Complete(len)) if len > limits.max_head_bytes => {
            return Err(HEAD_TOO_LARGE);
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buffer.len() > limits.max_head_bytes => {
            return Err(HEAD_TOO_LARGE);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(TOO_MANY_HEADERS),
        Err(_) => return Err(MALFORMED_HEAD),
    };
    let base = buffer.as_ptr() as usize;
    let offset = |part: &[u8]| {
        let start = part.as_ptr() as usize - base;
        start..start + part.len()
    };
    let (method, target) = match (parsed.method, parsed.path) {
        (Some(method), Some(target)) => (offset(method.as_bytes()), target),
        _ => return Err(MALFORMED_HEAD),
    };
    let target_range = offset(target.as_bytes());
    let (path, query) = match target.find('?') {
        Some(at) => (
            target_range.start..target_range.start + at,
            Some(target_range.start + at + 1..target_range.end),
        ),
        None => (target_range, None),
    };
    let mut headers = Vec::with_capacity(parsed.headers.len());
    let mut content_length: Option<usize> = None;
    let mut chunked = false;
    let mut expects_continue = false;
    for header in parsed.headers.iter() {
        headers.push((offset(header.name.as_bytes()), offset(header.value)));
        if header.name.eq_ignore_ascii_case("content-length") {
            let declared = parse_content_length(header.value).ok_or(BAD_CONTENT_LENGTH)?;
            if content_length.is_some_and(|seen| seen != declared) {
                return Err(BAD_CONTENT_LENGTH);
            }
            content_length = Some(declared);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            // Two of them could be read two ways by two servers in a row
            // (request smuggling): refused, as is any coding but chunked.
            if chunked {
                return Err(REPEATED_ENCODING);
            }
            if !header.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(UNSUPPORTED_ENCODING);
            }
            chunked = true;
        } else if header.name.eq_ignore_ascii_case("expect") {
            expects_continue = header.value.eq_ignore_ascii_case(b"100-continue");
        }
    }
    let framing = match (content_length, chunked) {
        (Some(_), true) => return Err(AMBIGUOUS_LENGTH),
        (Some(len), false) if len > limits.max_body_bytes => return Err(BODY_TOO_LARGE),
        (Some(len), false) => BodyFraming::Length(len),
        (None, true) => BodyFraming::Chunked,
        (None, false) => BodyFraming::Length(0),
    };
    Ok(Some(Head {
        len,
        method,
        path,
        query,
        headers,
        minor_version: parsed.version.unwrap_or(1),
        framing,
        expects_continue,
    }))
}

/// A Content-Length value: ASCII digits only (no sign, no spaces inside),
/// small enough to fit; anything else is `None`.
fn parse_content_length(value: &[u8]) -> Option<usize> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0usize, |total, digit| {
        total
            .checked_mul(10)?
            .checked_add(usize::from(digit - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8]) -> (Vec<Request>, Option<Decoded>) {
        let mut buffer = BytesMut::from(bytes);
        let mut requests = Vec::new();
        loop {
            match decode(&mut buffer, &Limits::default()) {
                Decoded::Request(request) => requests.push(request),
                other => return (requests, Some(other)),
            }
        }
    }

    fn rejection(bytes: &[u8]) -> Rejection {
        match decode_all(bytes).1 {
            Some(Decoded::Reject(rejection)) => rejection,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn pipelined_requests_decode_in_order() {
        let (requests, rest) = decode_all(
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b?x=1 HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}GET /c",
        );
        let paths: Vec<_> = requests.iter().map(|r| r.path().to_owned()).collect();
        assert_eq!(paths, ["/a", "/b"]);
        assert_eq!(requests[1].query(), Some("x=1"));
        assert_eq!(requests[1].body().as_ref(), b"{}");
        assert!(matches!(rest, Some(Decoded::Incomplete { .. })));
    }

    #[test]
    fn non_numeric_content_length_is_rejected_with_400() {
        assert_eq!(
            rejection(b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n").status,
            400
        );
        assert_eq!(
            rejection(b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n").status,
            400
        );
        assert_eq!(
            rejection(b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n").status,
            400
        );
    }

    #[test]
    fn conflicting_lengths_are_rejected() {
        let both = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(rejection(both), AMBIGUOUS_LENGTH);
        let two = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(rejection(two).status, 400);
    }

    #[test]
    fn declared_body_over_the_limit_is_rejected_before_it_arrives() {
        let head = b"POST / HTTP/1.1\r\nContent-Length: 65537\r\n\r\n";
        assert_eq!(rejection(head).status, 413);
    }

    #[test]
    fn head_over_the_limit_is_rejected_even_when_incomplete() {
        let mut endless = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
        endless.resize(17 * 1024, b'a');
        assert_eq!(rejection(&endless).status, 431);
    }

    #[test]
    fn more_headers_than_the_limit_get_431() {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..65 {
            head.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        assert_eq!(rejection(&head), TOO_MANY_HEADERS);
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        let (requests, _) = decode_all(
            b"POST /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n2;ext=1\r\n\":\r\n2\r\n1}\r\n0\r\n\r\nGET /next HTTP/1.1\r\n\r\n",
        );
        assert_eq!(requests[0].body().as_ref(), b"{\"a\":1}");
        assert_eq!(requests[1].path(), "/next");
    }

    #[test]
    fn unknown_transfer_coding_gets_501() {
        assert_eq!(
            rejection(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n").status,
            501
        );
    }

    #[test]
    fn a_repeated_or_layered_transfer_encoding_is_refused() {
        // The last one would win, and `identity` would leave a chunked body
        // to be read as the next request.
        assert_eq!(
            rejection(
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n"
            ),
            REPEATED_ENCODING
        );
        assert_eq!(
            rejection(b"POST / HTTP/1.1\r\nTransfer-Encoding: identity, chunked\r\n\r\n").status,
            501
        );
    }

    #[test]
    fn expect_continue_is_reported_while_the_body_is_missing() {
        let mut buffer = BytesMut::from(
            &b"POST / HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"[..],
        );
        assert!(matches!(
            decode(&mut buffer, &Limits::default()),
            Decoded::Incomplete {
                expects_continue: true
            }
        ));
    }

    #[test]
    fn garbage_is_a_400() {
        assert_eq!(rejection(b"\x00\x01\x02 / HTTP/1.1\r\n\r\n").status, 400);
    }
}
