//! Starting and stopping a service, the same way for every service: bind
//! the HTTP server, keep the background workers (relays, consumers,
//! writers, retention), and on shutdown drain in order: HTTP first (the
//! requests in flight finish, so their writes commit while the workers still
//! run), then the workers finish the batch they are in.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::db::DbError;
use crate::http::{Server, ServerOptions, Service};
use crate::metrics::{HttpMetrics, Metrics};
use crate::shutdown::Trigger;

/// How long HTTP connections get to finish their requests on shutdown.
const HTTP_DRAIN: Duration = Duration::from_secs(5);
/// How long the workers get after that: both together stay within the
/// 10 s a process manager usually allows after SIGTERM.
const WORKER_DRAIN: Duration = Duration::from_secs(4);

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("{0}")]
    Dependency(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// A service that is serving: its HTTP server and background workers.
pub struct Running {
    name: &'static str,
    server: Server,
    stop_workers: Trigger,
    workers: Vec<JoinHandle<()>>,
}

impl Running {
    /// Binds `host:port` (port 0 picks a free one) and serves `api`.
    /// `stop_workers` is the trigger the `workers` watch.
    pub fn start(
        name: &'static str,
        host: &str,
        port: u16,
        api: Arc<dyn Service>,
        metrics: &Metrics,
        stop_workers: Trigger,
        workers: Vec<JoinHandle<()>>,
    ) -> Result<Self, StartupError> {
        let addr = format!("{host}:{port}");
        let http = HttpMetrics::register(metrics.registry())?;
        let server = Server::bind(addr.as_str(), api, http, ServerOptions::default())
            .map_err(|source| StartupError::Bind { addr, source })?;
        Ok(Running {
            name,
            server,
            stop_workers,
            workers,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Serves until `shutdown` completes, then drains in order.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        tracing::info!(service = self.name, "stopping: draining connections");
        if !self.server.shutdown(HTTP_DRAIN).await {
            tracing::warn!(
                service = self.name,
                "some connections were still open after {HTTP_DRAIN:?}"
            );
        }
        self.stop_workers.fire();
        let deadline = tokio::time::Instant::now() + WORKER_DRAIN;
        for worker in self.workers {
            let _ = tokio::time::timeout_at(deadline, worker).await;
        }
        tracing::info!(service = self.name, "stopped");
    }
}
