//! Ordinary HTTP/1.1 behaviour: chunked bodies, pipelining, 100-continue,
//! panics, and draining on shutdown.

use std::io::Write;
use std::time::Duration;

use crate::helpers::{TestServer, read_response, read_to_close, status_of};

#[test]
fn a_chunked_body_reaches_the_handler_whole() {
    let server = TestServer::start();
    let response = server.exchange(
        b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    );
    assert_eq!(status_of(&response), 200);
    assert!(response.ends_with("\r\n\r\nhello world"), "{response}");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = TestServer::start();
    let response = server.exchange(
        b"GET /one HTTP/1.1\r\n\r\nGET /two HTTP/1.1\r\n\r\nGET /three HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    let one = response.find("/one").unwrap();
    let two = response.find("/two").unwrap();
    let three = response.find("/three").unwrap();
    assert!(one < two && two < three, "{response}");
}

#[test]
fn expect_continue_gets_100_before_the_body_is_sent() {
    let server = TestServer::start();
    let mut stream = server.connect();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    let interim = read_response(&mut stream);
    assert_eq!(status_of(&interim), 100);
    stream.write_all(b"ping").unwrap();
    let response = read_response(&mut stream);
    assert_eq!(status_of(&response), 200);
    assert!(response.ends_with("ping"));
}

#[test]
fn a_panicking_handler_gets_500_and_the_server_keeps_serving() {
    let server = TestServer::start();
    let mut stream = server.connect();
    stream.write_all(b"GET /panic HTTP/1.1\r\n\r\n").unwrap();
    let response = read_response(&mut stream);
    assert_eq!(status_of(&response), 500);
    assert!(response.contains(r#""code":"internal""#));
    assert!(
        !response.contains("handler bug"),
        "the cause leaked to the client"
    );
    stream.write_all(b"GET /after HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(status_of(&read_response(&mut stream)), 200);
}

#[test]
fn metrics_count_requests_by_route_and_status() {
    let server = TestServer::start();
    server.exchange(b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n");
    server.exchange(b"POST /echo HTTP/1.1\r\nContent-Length: x\r\n\r\n");
    let text = server.metrics.render();
    assert!(
        text.contains(r#"http_requests_total{route="/path",status="200"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"http_requests_total{route="rejected",status="400"} 1"#),
        "{text}"
    );
}

#[test]
fn shutdown_closes_idle_connections_and_stops_accepting() {
    let server = TestServer::start();
    let mut idle = server.connect();
    idle.write_all(b"GET /warm HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(status_of(&read_response(&mut idle)), 200);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let drained = runtime.block_on(server.server.shutdown(Duration::from_secs(5)));
    assert!(drained, "connections still open after shutdown");
    assert_eq!(read_to_close(&mut idle), "");
    let refused = std::net::TcpStream::connect_timeout(
        &server.server.local_addr(),
        Duration::from_millis(500),
    )
    .map(|mut stream| {
        let _ = stream.write_all(b"GET / HTTP/1.1\r\n\r\n");
        read_to_close(&mut stream)
    });
    assert!(refused.map(|text| text.is_empty()).unwrap_or(true));
}
