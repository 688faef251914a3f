//! A lean HTTP/1.1 client for the load generator: one keep-alive
//! connection, one request at a time, the answer read by its
//! `Content-Length`. A general client (reqwest, k6) spends several times
//! the CPU per request, which on a shared machine is taken from the
//! pipeline being measured.

use std::io::{self, Write};
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One connection to one server, opened on first use and again after a
/// failure.
pub(crate) struct HttpConnection {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    request: Vec<u8>,
    response: Vec<u8>,
}

impl HttpConnection {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        HttpConnection {
            addr,
            stream: None,
            request: Vec::with_capacity(512),
            response: Vec::with_capacity(4096),
        }
    }

    /// Drops the connection; the next request opens a new one.
    pub(crate) fn reset(&mut self) {
        self.stream = None;
    }

    /// Sends one request (with `token` as its bearer token, if any) and
    /// returns the answer's status. An error drops the connection; the
    /// next request opens a new one.
    pub(crate) async fn send(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
    ) -> io::Result<u16> {
        let result = self.exchange(method, path, token, body).await;
        if !matches!(result, Ok((_, true))) {
            self.stream = None;
        }
        result.map(|(status, _)| status)
    }

    /// The status, and whether the connection stays open.
    async fn exchange(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
    ) -> io::Result<(u16, bool)> {
        if self
            .stream
            .as_ref()
            .is_some_and(|stream| !open_and_quiet(stream))
        {
            self.stream = None;
        }
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().ok_or(io::ErrorKind::NotConnected)?;
        self.request.clear();
        for part in [
            method.as_bytes(),
            b" ",
            path.as_bytes(),
            b" HTTP/1.1\r\nHost: load\r\n",
        ] {
            self.request.extend_from_slice(part);
        }
        if let Some(token) = token {
            for part in [b"Authorization: Bearer ", token.as_bytes(), b"\r\n"] {
                self.request.extend_from_slice(part);
            }
        }
        if let Some(body) = body {
            self.request
                .extend_from_slice(b"Content-Type: application/json\r\nContent-Length: ");
            write!(self.request, "{}\r\n\r\n", body.len())?;
            self.request.extend_from_slice(body);
        } else {
            self.request.extend_from_slice(b"\r\n");
        }
        stream.write_all(&self.request).await?;
        self.response.clear();
        read_response(stream, &mut self.response).await
    }
}

/// Whether an idle connection is still open with nothing to read, checked
/// before it is used again: a server closes a keep-alive connection that
/// idled past its timeout (60 s for ours), and a request written into it
/// would fail, counted as the server's error. A general client checks the
/// same before reusing a pooled connection.
fn open_and_quiet(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(error) if error.kind() == io::ErrorKind::WouldBlock)
}

/// Reads one whole response; returns its status and whether the server
/// keeps the connection open.
async fn read_response(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> io::Result<(u16, bool)> {
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buffer.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let head = match response.parse(buffer) {
            Ok(httparse::Status::Complete(head)) => head,
            Ok(httparse::Status::Partial) => continue,
            Err(error) => return Err(io::Error::new(io::ErrorKind::InvalidData, error)),
        };
        let status = response.code.unwrap_or(0);
        let mut length = 0usize;
        let mut keep_alive = true;
        for header in response.headers.iter() {
            if header.name.eq_ignore_ascii_case("content-length") {
                length = std::str::from_utf8(header.value)
                    .ok()
                    .and_then(|value| value.trim().parse().ok())
                    .ok_or_else(|| {
                        io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length")
                    })?;
            } else if header.name.eq_ignore_ascii_case("connection") {
                keep_alive = !header.value.eq_ignore_ascii_case(b"close");
            }
        }
        while buffer.len() < head + length {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            buffer.extend_from_slice(&chunk[..n]);
        }
        return Ok((status, keep_alive));
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A server that answers one request per connection and then closes
    /// it without saying so (as one does with a connection idle past its
    /// timeout).
    async fn one_answer_per_connection() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut request = [0u8; 1024];
                let _ = socket.read(&mut request).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_not_used_again() {
        let addr = one_answer_per_connection().await;
        let mut connection = HttpConnection::new(addr);
        assert_eq!(connection.send("GET", "/", None, None).await.unwrap(), 200);
        // Give the server's close time to arrive.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(connection.send("GET", "/", None, None).await.unwrap(), 200);
    }
}
