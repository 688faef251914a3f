//! A test server with a small echo service, and a raw-socket client.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use http_api::metrics::HttpMetrics;
use http_api::{Request, Response, Server, ServerOptions};
use platform::metrics::Metrics;

pub(crate) struct TestServer {
    pub(crate) server: Server,
    pub(crate) metrics: Metrics,
}

impl TestServer {
    pub(crate) fn start() -> Self {
        Self::with_options(ServerOptions::default())
    }

    pub(crate) fn with_options(options: ServerOptions) -> Self {
        let metrics = Metrics::new();
        let http = HttpMetrics::register(metrics.registry()).unwrap();
        let service = Arc::new(|request: Request| match request.path() {
            "/panic" => panic!("handler bug"),
            "/echo" => {
                Response::with_body(200, "text/plain", request.body().clone()).with_route("/echo")
            }
            path => Response::with_body(200, "text/plain", path.to_owned()).with_route("/path"),
        });
        let server = Server::bind("127.0.0.1:0", service, http, options).unwrap();
        TestServer { server, metrics }
    }

    pub(crate) fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.server.local_addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    }

    /// Sends `bytes` on a new connection and reads until the server closes it.
    pub(crate) fn exchange(&self, bytes: &[u8]) -> String {
        let mut stream = self.connect();
        stream.write_all(bytes).unwrap();
        read_to_close(&mut stream)
    }
}

pub(crate) fn read_to_close(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads exactly one response (head plus Content-Length body).
pub(crate) fn read_response(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "connection closed mid-head"
        );
        out.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&out).into_owned();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("Content-Length: "))
        .map(|value| value.trim().parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    head + &String::from_utf8_lossy(&body)
}

pub(crate) fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}
