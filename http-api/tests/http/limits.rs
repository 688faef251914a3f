//! Hostile and broken requests: each gets an answer, memory stays bounded.

use std::io::Write;
use std::time::Duration;

use http_api::ServerOptions;

use crate::helpers::{TestServer, read_response, read_to_close, status_of};

#[test]
fn non_numeric_content_length_gets_400_not_a_dropped_connection() {
    let server = TestServer::start();
    let response = server.exchange(b"POST /echo HTTP/1.1\r\nContent-Length: ten\r\n\r\n");
    assert_eq!(status_of(&response), 400);
    assert!(
        response.contains(r#""code":"malformed_request""#),
        "{response}"
    );
}

#[test]
fn more_than_sixteen_headers_are_served_and_too_many_get_431() {
    let server = TestServer::start();
    let mut twenty = String::from("GET /many HTTP/1.1\r\nConnection: close\r\n");
    for i in 0..20 {
        twenty.push_str(&format!("X-Header-{i}: value\r\n"));
    }
    twenty.push_str("\r\n");
    assert_eq!(status_of(&server.exchange(twenty.as_bytes())), 200);

    let mut hundred = String::from("GET /many HTTP/1.1\r\n");
    for i in 0..100 {
        hundred.push_str(&format!("X-Header-{i}: value\r\n"));
    }
    hundred.push_str("\r\n");
    assert_eq!(status_of(&server.exchange(hundred.as_bytes())), 431);
}

#[test]
fn an_endless_header_line_gets_431_and_the_connection_is_closed() {
    let server = TestServer::start();
    let mut stream = server.connect();
    stream.write_all(b"GET / HTTP/1.1\r\nX-Endless: ").unwrap();
    let chunk = [b'a'; 64 * 1024];
    let mut sent = 0usize;
    // The server stops reading after 16 KiB plus a bounded discard; the
    // socket buffers fill and writes fail long before 64 MiB.
    while sent < 64 * 1024 * 1024 {
        match stream.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(
        sent < 64 * 1024 * 1024,
        "the server kept reading an endless head"
    );
    let response = read_to_close(&mut stream);
    assert_eq!(status_of(&response), 431, "{response}");
}

#[test]
fn a_head_over_sixteen_kib_gets_431() {
    let server = TestServer::start();
    let mut request = b"GET / HTTP/1.1\r\nX-Long: ".to_vec();
    request.resize(20 * 1024, b'a');
    request.extend_from_slice(b"\r\n\r\n");
    let response = server.exchange(&request);
    assert_eq!(status_of(&response), 431);
    assert!(response.contains("Connection: close"));
}

#[test]
fn a_body_over_64_kib_gets_413() {
    let server = TestServer::start();
    let response = server.exchange(b"POST /echo HTTP/1.1\r\nContent-Length: 70000\r\n\r\n");
    assert_eq!(status_of(&response), 413);
    let mut chunked = b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(b"8000\r\n");
        chunked.extend_from_slice(&[b'x'; 0x8000]);
        chunked.extend_from_slice(b"\r\n");
    }
    assert_eq!(status_of(&server.exchange(&chunked)), 413);
}

#[test]
fn a_request_that_never_finishes_gets_408() {
    let server = TestServer::with_options(ServerOptions {
        request_timeout: Duration::from_millis(300),
        ..ServerOptions::default()
    });
    let response = server.exchange(b"POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nhalf");
    assert_eq!(status_of(&response), 408);
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let server = TestServer::with_options(ServerOptions {
        idle_timeout: Duration::from_millis(200),
        ..ServerOptions::default()
    });
    let mut stream = server.connect();
    assert_eq!(read_to_close(&mut stream), "");
}

#[test]
fn a_busy_pipelining_client_is_not_timed_out() {
    // Every write finishes one request and starts the next, so the
    // server's buffer is never empty; each request still takes only
    // ~50 ms, far under the timeout, and none may get 408.
    let server = TestServer::with_options(ServerOptions {
        request_timeout: Duration::from_millis(500),
        ..ServerOptions::default()
    });
    let mut stream = server.connect();
    stream.write_all(b"GET /0 HTT").unwrap();
    for round in 1..=20 {
        std::thread::sleep(Duration::from_millis(50));
        stream
            .write_all(format!("P/1.1\r\n\r\nGET /{round} HTT").as_bytes())
            .unwrap();
        let response = read_response(&mut stream);
        assert_eq!(status_of(&response), 200, "round {round}: {response}");
    }
}
