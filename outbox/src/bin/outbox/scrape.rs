//! The standalone relay's scrape endpoint: `GET /metrics` (the Prometheus
//! text exposition) and `GET /healthz`, nothing else, one request per
//! connection.
//!
//! The services serve their metrics through their HTTP API (the `http-api`
//! crate); the relay has no API and its crate no HTTP server, so this is
//! the least that Prometheus needs, written to be safe on an open port: a
//! request head is read for at most [`READ_TIMEOUT`] and [`MAX_HEAD`]
//! bytes, at most [`MAX_CONNECTIONS`] are served at once (more wait in
//! the kernel's backlog), and anything but those two routes gets a 404 or
//! 405 and the connection closed.

use std::sync::Arc;
use std::time::Duration;

use platform::metrics::Metrics;
use platform::shutdown::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Longest wait for a request head.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read; a longer one is refused.
pub(crate) const MAX_HEAD: usize = 8 * 1024;
/// Connections served at once.
pub(crate) const MAX_CONNECTIONS: usize = 32;

/// Serves `metrics` on `listener` until `stop` fires.
pub(crate) async fn serve(listener: TcpListener, metrics: Metrics, stop: Signal) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot,
            _ = stop.cancelled() => return,
        };
        let Ok(slot) = slot else {
            return;
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.cancelled() => return,
        };
        match accepted {
            Ok((stream, _)) => {
                let metrics = metrics.clone();
                tokio::spawn(async move {
                    answer(stream, &metrics).await;
                    drop(slot);
                });
            }
            Err(error) => {
                tracing::warn!(%error, "metrics endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// One connection, in [`READ_TIMEOUT`] for its head and as long again
/// for the answer: a client that does not read holds its slot no longer.
async fn answer(mut stream: TcpStream, metrics: &Metrics) {
    let reply = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(Some(head)) => respond(&head, metrics),
        Ok(None) => reply(400, "text/plain", "bad request\n"),
        // Nothing to answer a client that sent nothing in time.
        Err(_) => return,
    };
    let _ = tokio::time::timeout(READ_TIMEOUT, async {
        stream.write_all(&reply).await?;
        stream.shutdown().await
    })
    .await;
}

/// The request head up to its blank line; `None` when the peer closed
/// first or it is too long.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let mut buffer = [0u8; 1024];
    loop {
        let read = stream.read(&mut buffer).await.ok()?;
        if read == 0 || head.len() + read > MAX_HEAD {
            return None;
        }
        // Only the new bytes and the three before them can end the head.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&buffer[..read]);
        if head[from..].windows(4).any(|window| window == b"\r\n\r\n") {
            return Some(head);
        }
    }
}

/// The answer to a request head.
fn respond(head: &[u8], metrics: &Metrics) -> Vec<u8> {
    let line = head.split(|byte| *byte == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|byte| *byte == b' ');
    let (method, target) = (parts.next(), parts.next());
    let path = target.map(|target| {
        target
            .split(|byte| *byte == b'?')
            .next()
            .unwrap_or_default()
    });
    match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => {
            reply(200, "text/plain; version=0.0.4", &metrics.render())
        }
        (Some(b"GET"), Some(b"/healthz")) => reply(200, "application/json", "{\"status\":\"ok\"}"),
        (Some(_), Some(b"/metrics" | b"/healthz")) => reply(405, "text/plain", "only GET\n"),
        _ => reply(
            404,
            "text/plain",
            "not found: this port serves /metrics and /healthz\n",
        ),
    }
}

fn reply(status: u16, content_type: &str, body: &str) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    let allow = if status == 405 { "Allow: GET\r\n" } else { "" };
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of(head: &str) -> String {
        let reply = respond(head.as_bytes(), &Metrics::new());
        String::from_utf8(reply)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn only_get_of_the_two_routes_is_answered() {
        assert_eq!(
            status_of("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            "HTTP/1.1 200 OK"
        );
        assert_eq!(
            status_of("GET /metrics?x=1 HTTP/1.1\r\n\r\n"),
            "HTTP/1.1 200 OK"
        );
        assert_eq!(
            status_of("GET /healthz HTTP/1.0\r\n\r\n"),
            "HTTP/1.1 200 OK"
        );
        assert_eq!(
            status_of("POST /metrics HTTP/1.1\r\n\r\n"),
            "HTTP/1.1 405 Method Not Allowed"
        );
        assert_eq!(
            status_of("GET /../etc/passwd HTTP/1.1\r\n\r\n"),
            "HTTP/1.1 404 Not Found"
        );
        assert_eq!(status_of("\u{0}\u{1}garbage"), "HTTP/1.1 404 Not Found");
    }

    #[test]
    fn the_process_figures_are_served() {
        let reply =
            String::from_utf8(respond(b"GET /metrics HTTP/1.1\r\n\r\n", &Metrics::new())).unwrap();
        assert!(reply.contains("process_cpu_seconds_total"), "{reply}");
    }

    #[tokio::test]
    async fn an_oversized_or_silent_request_is_not_served() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Signal::new();
        let server = tokio::spawn(serve(listener, Metrics::new(), stop.clone()));
        let mut client = TcpStream::connect(addr).await.unwrap();
        let endless = format!("GET /metrics HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD));
        let _ = client.write_all(endless.as_bytes()).await;
        let mut answer = String::new();
        let _ = client.read_to_string(&mut answer).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        // A well-formed one is still served after it.
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        stop.cancel();
        server.await.unwrap();
    }
}
