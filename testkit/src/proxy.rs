//! A TCP proxy for fault tests: every connection made to it is forwarded
//! to one upstream server, and the test decides when those connections
//! fail. It can cut the connection carrying the next N bytes towards the
//! server, cut every open connection at once, or freeze the server's side
//! (nothing it sends reaches the client until thawed, as with a server
//! that stops answering without closing anything), on every connection or
//! on the next one after its first few AMQP frames (a broker that finishes
//! the handshake, then sits on the next request).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const UNARMED: i64 = i64::MAX;

struct Faults {
    /// Bytes towards the server before the connection carrying them is cut.
    budget: AtomicI64,
    /// Bumped to cut every connection open at that moment.
    cuts: watch::Sender<u64>,
    /// While true, the server's bytes are held back.
    frozen: watch::Sender<bool>,
    /// Once true, the proxy accepts nothing more (a server that is gone).
    stopped: watch::Sender<bool>,
    /// Connections accepted so far.
    accepted: AtomicI64,
    /// The next connection accepted passes this many AMQP frames from the
    /// server, then nothing more.
    silent_after_frames: AtomicI64,
}

/// A running proxy; it stops with the test's runtime.
pub struct Proxy {
    addr: SocketAddr,
    faults: Arc<Faults>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let faults = Arc::new(Faults {
            budget: AtomicI64::new(UNARMED),
            cuts: watch::channel(0).0,
            frozen: watch::channel(false).0,
            stopped: watch::channel(false).0,
            accepted: AtomicI64::new(0),
            silent_after_frames: AtomicI64::new(UNARMED),
        });
        let shared = faults.clone();
        let mut stopped = faults.stopped.subscribe();
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => client,
                        Err(_) => return,
                    },
                    _ = stopped.wait_for(|stopped| *stopped) => return,
                };
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                let frames = shared.silent_after_frames.swap(UNARMED, Ordering::SeqCst);
                tokio::spawn(forward(client, server, shared.clone(), frames));
            }
        });
        Proxy { addr, faults }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections the proxy has accepted and forwarded so far.
    pub fn connections(&self) -> i64 {
        self.faults.accepted.load(Ordering::SeqCst)
    }

    /// An AMQP URL (guest, vhost `/`) through this proxy.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }

    /// `url` (a `postgres://` or `amqp://` URL) with its host and port
    /// replaced by this proxy's.
    pub fn through(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
        let (credentials, rest) = match rest.rsplit_once('@') {
            Some((credentials, rest)) => (format!("{credentials}@"), rest),
            None => (String::new(), rest),
        };
        let path = rest.find('/').map_or("", |at| &rest[at..]);
        format!("{scheme}://{credentials}{}{path}", self.addr)
    }

    /// The connection carrying the next `bytes` bytes towards the server
    /// is cut there; connections made afterwards work normally.
    pub fn cut_after(&self, bytes: i64) {
        self.faults.budget.store(bytes, Ordering::SeqCst);
    }

    /// Cuts every connection open now; new ones work normally.
    pub fn cut_all(&self) {
        self.faults.cuts.send_modify(|cuts| *cuts += 1);
    }

    /// Cuts every connection open now and refuses every new one, as a
    /// server that went away: its port is closed.
    pub fn stop(&self) {
        self.faults.stopped.send_replace(true);
        self.cut_all();
    }

    /// Holds back everything the server sends, on every connection.
    pub fn freeze(&self) {
        self.faults.frozen.send_replace(true);
    }

    /// The next connection made passes the server's first `frames` AMQP
    /// frames (3: the handshake's Start, Tune and Open-Ok), then holds back
    /// everything else the server sends for as long as it stays open.
    /// Connections made afterwards work normally.
    pub fn silence_next_after_frames(&self, frames: i64) {
        self.faults
            .silent_after_frames
            .store(frames, Ordering::SeqCst);
    }

    /// Lets the held bytes and everything after them through again.
    pub fn thaw(&self) {
        self.faults.frozen.send_replace(false);
    }
}

/// Counts the AMQP frames in a byte stream (type, channel, size, payload,
/// frame end), so a connection can be silenced at a frame boundary.
struct FrameCounter {
    /// Bytes of the current frame's header read so far.
    header: Vec<u8>,
    /// Bytes left of the current frame's payload and end octet.
    rest: usize,
    frames: i64,
}

impl FrameCounter {
    fn new() -> Self {
        FrameCounter {
            header: Vec::with_capacity(7),
            rest: 0,
            frames: 0,
        }
    }

    /// How many of `bytes` to pass so that no more than `limit` frames have
    /// passed in all.
    fn allowed(&mut self, bytes: &[u8], limit: i64) -> usize {
        let mut at = 0;
        while at < bytes.len() {
            if self.frames >= limit {
                return at;
            }
            if self.rest > 0 {
                let take = self.rest.min(bytes.len() - at);
                self.rest -= take;
                at += take;
                if self.rest == 0 {
                    self.frames += 1;
                }
                continue;
            }
            self.header.push(bytes[at]);
            at += 1;
            if self.header.len() == 7 {
                let size = u32::from_be_bytes([
                    self.header[3],
                    self.header[4],
                    self.header[5],
                    self.header[6],
                ]);
                self.rest = size as usize + 1;
                self.header.clear();
            }
        }
        at
    }
}

async fn forward(client: TcpStream, server: TcpStream, faults: Arc<Faults>, frames: i64) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mut cuts = faults.cuts.subscribe();
    cuts.mark_unchanged();
    let upstream = async {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let left = faults.budget.fetch_sub(n as i64, Ordering::SeqCst);
            if left != UNARMED && left - (n as i64) < 0 {
                faults.budget.store(UNARMED, Ordering::SeqCst);
                return;
            }
            if server_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    };
    let downstream = async {
        let mut frozen = faults.frozen.subscribe();
        let mut counter = FrameCounter::new();
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let n = match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if frozen.wait_for(|frozen| !*frozen).await.is_err() {
                return;
            }
            let n = if frames == UNARMED {
                n
            } else {
                counter.allowed(&buffer[..n], frames)
            };
            if client_write.write_all(&buffer[..n]).await.is_err() {
                return;
            }
            if frames != UNARMED && counter.frames >= frames {
                // Silent from here on, the connection left open.
                std::future::pending::<()>().await;
            }
        }
    };
    // Whichever direction ends first, or a cut, ends the connection, as a
    // cut cable would: both sockets are dropped.
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
        _ = cuts.changed() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_are_pointed_at_the_proxy() {
        let proxy = Proxy::start("127.0.0.1:9".parse().unwrap()).await;
        let port = proxy.addr().port();
        assert_eq!(
            proxy.through("postgres://postgres@127.0.0.1:5432/orders"),
            format!("postgres://postgres@127.0.0.1:{port}/orders")
        );
        assert_eq!(
            proxy.through("amqp://guest:guest@localhost:5672/%2f"),
            format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
        );
    }

    #[tokio::test]
    async fn a_frozen_server_is_silent_until_thawed_and_a_cut_ends_the_connection() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 64];
                    while let Ok(n) = socket.read(&mut buffer).await {
                        if n == 0 || socket.write_all(&buffer[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let proxy = Proxy::start(upstream).await;
        let mut socket = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut buffer = [0u8; 4];
        proxy.freeze();
        socket.write_all(b"ping").await.unwrap();
        let silent = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            socket.read_exact(&mut buffer),
        )
        .await;
        assert!(silent.is_err(), "a frozen server answered");
        proxy.thaw();
        socket.read_exact(&mut buffer).await.unwrap();
        assert_eq!(&buffer, b"ping");
        proxy.cut_all();
        let after_cut = socket.read(&mut buffer).await;
        assert!(matches!(after_cut, Ok(0) | Err(_)), "{after_cut:?}");
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![1, 0, 0];
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(payload);
        frame.push(0xCE);
        frame
    }

    #[test]
    fn frames_are_counted_across_reads_and_cut_at_a_boundary() {
        let stream: Vec<u8> =
            [frame(b"start"), frame(b""), frame(b"open-ok"), frame(b"x")].concat();
        let third_ends = frame(b"start").len() + frame(b"").len() + frame(b"open-ok").len();
        let mut counter = FrameCounter::new();
        let mut passed = 0;
        for chunk in stream.chunks(5) {
            let allowed = counter.allowed(chunk, 3);
            passed += allowed;
            if allowed < chunk.len() {
                break;
            }
        }
        assert_eq!(passed, third_ends);
        assert_eq!(counter.frames, 3);
    }
}
