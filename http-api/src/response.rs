//! The response a [`crate::Service`] returns, its wire encoding, and the one
//! JSON error body both services use: `{"error":{"code":…,"message":…}}`.

use std::cell::RefCell;
use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

/// An HTTP response, plus the route label metrics file it under.
#[derive(Debug, Clone)]
pub struct Response {
    status: u16,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
    route: &'static str,
}

impl Response {
    /// A response with no body.
    pub fn empty(status: u16) -> Self {
        Response {
            status,
            content_type: "",
            headers: Vec::new(),
            body: Bytes::new(),
            route: "unmatched",
        }
    }

    /// A body with its content type.
    pub fn with_body(status: u16, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        Response {
            content_type,
            body: body.into(),
            ..Response::empty(status)
        }
    }

    /// `value` serialised as JSON.
    pub fn json(status: u16, value: &impl Serialize) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Response::with_body(status, "application/json", body),
            Err(error) => {
                tracing::error!(%error, "response body could not be serialised");
                Response::error(500, "internal", "internal error")
            }
        }
    }

    /// The error body of the design: `{"error":{"code":…,"message":…}}`.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        #[derive(Serialize)]
        struct Body<'a> {
            error: Detail<'a>,
        }
        #[derive(Serialize)]
        struct Detail<'a> {
            code: &'a str,
            message: &'a str,
        }
        let body = Body {
            error: Detail { code, message },
        };
        // Two borrowed strings always serialise.
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        Response::with_body(status, "application/json", bytes)
    }

    /// Adds a header; `Content-Type`, `Content-Length`, `Date` and
    /// `Connection` are written by the encoder and must not be added here.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Names the route for metrics (`/products/:id`, not the concrete path).
    pub fn with_route(mut self, route: &'static str) -> Self {
        self.route = route;
        self
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn route(&self) -> &'static str {
        self.route
    }

    pub fn body(&self) -> &Bytes {
        &self.body
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    /// Appends the response to `out` as HTTP/1.1 bytes.
    pub fn encode(&self, out: &mut BytesMut, connection: Connection) {
        out.reserve(160 + self.body.len());
        out.put_slice(b"HTTP/1.1 ");
        out.put_slice(self.status.to_string().as_bytes());
        out.put_u8(b' ');
        out.put_slice(reason(self.status).as_bytes());
        out.put_slice(b"\r\nServer: pipeline\r\nDate: ");
        with_http_date(|date| out.put_slice(date.as_bytes()));
        if !self.content_type.is_empty() {
            out.put_slice(b"\r\nContent-Type: ");
            out.put_slice(self.content_type.as_bytes());
        }
        // 1xx and 204 answers have no body and may not say they have one.
        if self.status >= 200 && self.status != 204 {
            out.put_slice(b"\r\nContent-Length: ");
            out.put_slice(self.body.len().to_string().as_bytes());
        }
        match connection {
            Connection::Persistent => {}
            Connection::KeepAlive => out.put_slice(b"\r\nConnection: keep-alive"),
            Connection::Close => out.put_slice(b"\r\nConnection: close"),
        }
        for (name, value) in &self.headers {
            out.put_slice(b"\r\n");
            out.put_slice(name.as_bytes());
            out.put_slice(b": ");
            out.put_slice(value.as_bytes());
        }
        out.put_slice(b"\r\n\r\n");
        out.put_slice(&self.body);
    }
}

/// What a response says of its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// HTTP/1.1's default, open after the answer: nothing to say.
    Persistent,
    /// Open after the answer, for an HTTP/1.0 client that asked for it.
    KeepAlive,
    /// Closed after the answer.
    Close,
}

/// Formats `Date` once per second per thread instead of once per response.
fn with_http_date(write: impl FnOnce(&str)) {
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    CACHED.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != second {
            *cached = (second, httpdate::fmt_http_date(now));
        }
        write(&cached.1);
    });
}

/// The reason phrase of a status, as the `http` crate names it; clients
/// read the number, so an unknown one says only that.
fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|status| status.canonical_reason())
        .unwrap_or("Unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_the_design_shape() {
        let response = Response::error(422, "invalid_name", "name is \"empty\"");
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"error": {"code": "invalid_name", "message": "name is \"empty\""}})
        );
    }

    #[test]
    fn encoding_writes_status_length_headers_and_body() {
        let mut out = BytesMut::new();
        Response::json(201, &serde_json::json!({"id": 1}))
            .with_header("Location", "/products/1")
            .encode(&mut out, Connection::Close);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.starts_with("HTTP/1.1 201 Created\r\n"));
        assert!(text.contains("\r\nContent-Length: 8\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
        assert!(text.contains("\r\nLocation: /products/1\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"id\":1}"));
    }

    #[test]
    fn no_content_has_no_length_and_http_1_0_keep_alive_is_said() {
        let mut out = BytesMut::new();
        Response::empty(204).encode(&mut out, Connection::KeepAlive);
        let text = std::str::from_utf8(&out).unwrap();
        assert!(text.starts_with("HTTP/1.1 204 No Content\r\n"), "{text}");
        assert!(!text.contains("Content-Length"), "{text}");
        assert!(text.contains("\r\nConnection: keep-alive\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n"), "{text}");
    }
}
