//! The HTTP/1.1 server: an accept loop and one `may` coroutine per
//! connection, reading into a bounded buffer, answering pipelined requests
//! in order, and draining on shutdown.
//!
//! It keeps the shape of may's own HTTP loop (read, decode all complete
//! requests, write all answers) with the limits of [`Limits`] and explicit
//! timeouts; why it is ours is told in docs/ARCHITECTURE.md ("The HTTP
//! core").

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use may::net::{TcpListener, TcpStream};

use crate::codec::{self, Decoded, Limits, Rejection};
use crate::metrics::HttpMetrics;
use crate::{Connection, Request, Response};

/// What answers requests: the service's router.
pub trait Service: Send + Sync + 'static {
    fn call(&self, request: Request) -> Response;
}

impl<F> Service for F
where
    F: Fn(Request) -> Response + Send + Sync + 'static,
{
    fn call(&self, request: Request) -> Response {
        self(request)
    }
}

/// Bounds and timeouts of every connection.
#[derive(Debug, Clone, Copy)]
pub struct ServerOptions {
    pub limits: Limits,
    /// Time a client has to send a whole request once it has begun; then 408.
    pub request_timeout: Duration,
    /// Time an idle keep-alive connection stays open.
    pub idle_timeout: Duration,
    /// Stack of each connection coroutine. JSON decoding recurses up to
    /// serde_json's depth limit of 128; 128 KiB leaves room for it
    /// (measured: a 128-deep array body needs about 40 KiB).
    pub stack_size: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            limits: Limits::default(),
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            stack_size: 128 * 1024,
        }
    }
}

/// A running server; dropping it does not stop it, [`Server::shutdown`] does.
pub struct Server {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    service: Arc<dyn Service>,
    metrics: HttpMetrics,
    options: ServerOptions,
    stopping: AtomicBool,
    /// A clone of each open connection, so shutdown can end their reads.
    open: Mutex<HashMap<u64, TcpStream>>,
    next_id: AtomicU64,
}

impl Server {
    /// Binds `addr` (port 0 picks a free port) and starts accepting.
    pub fn bind(
        addr: impl ToSocketAddrs,
        service: Arc<dyn Service>,
        metrics: HttpMetrics,
        options: ServerOptions,
    ) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            service,
            metrics,
            options,
            stopping: AtomicBool::new(false),
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        });
        let acceptor = shared.clone();
        spawn_coroutine(64 * 1024, move || accept_loop(listener, acceptor))?;
        Ok(Server { local_addr, shared })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Connections currently open.
    pub fn open_connections(&self) -> usize {
        self.shared.open_map().len()
    }

    /// Stops accepting, lets each connection finish the request it is in,
    /// and waits up to `grace` for all of them to close. Returns whether
    /// every connection closed in time.
    pub async fn shutdown(&self, grace: Duration) -> bool {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // The acceptor is parked in accept(); one connection wakes it up.
        let mut wake_addr = self.local_addr;
        if wake_addr.ip().is_unspecified() {
            wake_addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let _ = std::net::TcpStream::connect_timeout(&wake_addr, Duration::from_millis(200));
        for stream in self.shared.open_map().values() {
            // Reads see end-of-stream; a request being handled still gets
            // its answer, written with `Connection: close`.
            let _ = stream.shutdown(Shutdown::Read);
        }
        let deadline = Instant::now() + grace;
        while self.open_connections() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }
}

impl Shared {
    fn open_map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, TcpStream>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Spawns a coroutine on the `may` scheduler.
#[allow(unsafe_code)]
fn spawn_coroutine(stack_size: usize, body: impl FnOnce() + Send + 'static) -> io::Result<()> {
    let builder = may::coroutine::Builder::new().stack_size(stack_size);
    // SAFETY: may marks spawning unsafe because a coroutine that blocks its
    // OS thread, or keeps a thread-local borrow across a yield, misbehaves.
    // Connection coroutines do neither: socket I/O and the bridge park the
    // coroutine, and the only thread-local (the Date cache) is borrowed
    // within one call that never yields.
    unsafe { builder.spawn(body) }.map(|_| ())
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for incoming in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let stream = match incoming {
            Ok(stream) => stream,
            Err(error) => {
                // Out of file descriptors, most likely: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                may::coroutine::sleep(Duration::from_millis(20));
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            shared.open_map().insert(id, clone);
        }
        let connection = shared.clone();
        let stack = shared.options.stack_size;
        let spawned = spawn_coroutine(stack, move || {
            let mut stream = stream;
            if let Err(error) = serve_connection(&mut stream, &connection) {
                tracing::debug!(%error, "connection ended with an error");
            }
            let _ = stream.shutdown(Shutdown::Both);
            connection.open_map().remove(&id);
        });
        if let Err(error) = spawned {
            tracing::error!(%error, "could not start a connection coroutine");
            shared.open_map().remove(&id);
        }
    }
}

/// Serves one connection until the client closes it, it idles out, a
/// request is rejected, or the server stops.
fn serve_connection(stream: &mut TcpStream, shared: &Shared) -> io::Result<()> {
    let options = &shared.options;
    // Both buffers start empty and grow on use: an idle connection costs its
    // coroutine's touched stack and one read chunk, not pre-sized buffers
    // (measured: 10,000 held connections, 240 MB with 4 KiB + 4 KiB buffers
    // and an 8 KiB read chunk up front).
    let mut input = BytesMut::new();
    let mut output = BytesMut::new();
    let mut request_began: Option<Instant> = None;
    let mut applied_timeout: Option<Duration> = None;
    let mut continue_sent = false;
    let peer = stream.peer_addr().ok().map(|address| address.ip());
    loop {
        loop {
            match codec::decode(&mut input, &options.limits) {
                Decoded::Request(mut request) => {
                    request.peer = peer;
                    // Whatever follows it is a new request: its clock starts
                    // when it is first seen incomplete, below.
                    request_began = None;
                    continue_sent = false;
                    let keep_alive =
                        request.keep_alive() && !shared.stopping.load(Ordering::Relaxed);
                    answer(shared, request, &mut output, keep_alive);
                    if !keep_alive {
                        return stream.write_all(&output);
                    }
                }
                Decoded::Incomplete { expects_continue } => {
                    if expects_continue && !continue_sent {
                        output.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                        continue_sent = true;
                    }
                    break;
                }
                Decoded::Reject(rejection) => {
                    return reject(stream, shared, &mut output, &rejection);
                }
            }
        }
        if !output.is_empty() {
            stream.write_all(&output)?;
            output.clear();
        }
        request_began = match (input.is_empty(), request_began) {
            (true, _) => None,
            (false, None) => Some(Instant::now()),
            (false, began) => began,
        };
        let timeout = match request_began {
            None => options.idle_timeout,
            Some(began) => match options.request_timeout.checked_sub(began.elapsed()) {
                Some(left) if !left.is_zero() => left,
                _ => return reject(stream, shared, &mut output, &REQUEST_TIMEOUT),
            },
        };
        // may makes a system call of every change (the socket option
        // besides its own timer); between requests the timeout is the same.
        if applied_timeout != Some(timeout) {
            stream.set_read_timeout(Some(timeout))?;
            applied_timeout = Some(timeout);
        }
        match read_some(stream, &mut input) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(error) if is_timeout(&error) && request_began.is_some() => {
                return reject(stream, shared, &mut output, &REQUEST_TIMEOUT);
            }
            Err(error) if is_timeout(&error) => return Ok(()),
            Err(error) => return Err(error),
        }
    }
}

const REQUEST_TIMEOUT: Rejection = Rejection {
    status: 408,
    code: "request_timeout",
    message: "the request was not received in time",
};

/// Reads what the socket has into the free tail of `input`.
fn read_some(stream: &mut TcpStream, input: &mut BytesMut) -> io::Result<usize> {
    const READ_CHUNK: usize = 4 * 1024;
    let filled = input.len();
    input.resize(filled + READ_CHUNK, 0);
    let result = stream.read(&mut input[filled..]);
    input.truncate(filled + *result.as_ref().unwrap_or(&0));
    result
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// Calls the service, turning a panic into a 500, and encodes the answer.
fn answer(shared: &Shared, request: Request, output: &mut BytesMut, keep_alive: bool) {
    let started = Instant::now();
    let connection = match (keep_alive, request.minor_version) {
        (false, _) => Connection::Close,
        (true, 0) => Connection::KeepAlive,
        (true, _) => Connection::Persistent,
    };
    let method_is_known = matches!(
        request.method(),
        "GET" | "POST" | "PUT" | "PATCH" | "DELETE"
    );
    let response = match catch_unwind(AssertUnwindSafe(|| shared.service.call(request))) {
        Ok(response) => response,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %message, "request handler panicked");
            Response::error(500, "internal", "internal error")
        }
    };
    let route = if method_is_known {
        response.route()
    } else {
        "other_method"
    };
    shared
        .metrics
        .observe(route, response.status(), started.elapsed());
    response.encode(output, connection);
}

fn reject(
    stream: &mut TcpStream,
    shared: &Shared,
    output: &mut BytesMut,
    rejection: &Rejection,
) -> io::Result<()> {
    shared
        .metrics
        .observe("rejected", rejection.status, Duration::ZERO);
    Response::error(rejection.status, rejection.code, rejection.message)
        .encode(output, Connection::Close);
    stream.write_all(output)?;
    linger(stream);
    Ok(())
}

/// Closes our side and discards what the client is still sending, for a
/// bounded time and amount. Closing with unread bytes makes the kernel send
/// a reset, which can destroy the answer before the client reads it.
fn linger(stream: &mut TcpStream) {
    const MAX_DISCARD: usize = 256 * 1024;
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut sink = [0u8; 4096];
    let mut discarded = 0;
    while discarded < MAX_DISCARD {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => discarded += n,
        }
    }
}
