//! Starting and stopping a service, the same way for every service: read
//! its HTTP settings, bind its server, keep its background workers
//! (relays, consumers, writers, retention), and on shutdown drain in
//! order: HTTP first (the requests in flight finish, so their writes commit
//! while the workers still run), then the workers finish the batch they
//! are in.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use platform::db::{DatabaseSettings, DbError, MigrationSet, Pools};
use platform::metrics::Metrics;
use platform::settings::{ConfigError, Settings};
use platform::shutdown::Signal;
use tokio::task::JoinHandle;

use crate::auth::{AuthSettings, Authenticator};
use crate::bridge::Bridge;
use crate::metrics::HttpMetrics;
use crate::ops::{BrokerProbe, Ops, ReadinessMetrics};
use crate::router::{Admin, Api, Routes};
use crate::server::{Server, ServerOptions, Service};

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
    /// The service's share of the pipeline could not start.
    #[error("pipeline: {0}")]
    Pipeline(#[from] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// Where a service listens and how much it takes on, from
/// `<PREFIX>_HOST` (default 0.0.0.0), `<PREFIX>_PORT`,
/// `<PREFIX>_ADMIN_HOST` (default 127.0.0.1), `<PREFIX>_ADMIN_PORT`
/// (default the service's own),
/// `<PREFIX>_MAX_IN_FLIGHT` (default 4096) and
/// `<PREFIX>_REQUEST_TIMEOUT_MS` (default 5000); who may call it from
/// `AUTH_*` ([`AuthSettings`]).
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// The service's name (`order`), which is also the prefix of its settings.
    pub name: &'static str,
    pub host: String,
    /// 0 picks a free port (tests read the real one from the application).
    pub port: u16,
    /// The admin listener: `/metrics`, the detailed `/readyz`, `/healthz`.
    /// Loopback by default; 0 picks a free port (printed at start).
    pub admin_host: String,
    pub admin_port: u16,
    /// Work in flight on the stores before requests get 503.
    pub max_in_flight: usize,
    /// Longest a request waits for the stores before 503.
    pub request_timeout: Duration,
    /// Who may call what (`AUTH_*`, shared by the services).
    pub auth: AuthSettings,
}

impl HttpSettings {
    /// The settings of service `name`, whose admin listener is on
    /// `admin_port` unless `<PREFIX>_ADMIN_PORT` says otherwise.
    pub fn read(
        settings: &Settings<'_>,
        name: &'static str,
        admin_port: u16,
    ) -> Result<Self, ConfigError> {
        let prefix = name.to_ascii_uppercase();
        let named = |setting: &str| format!("{prefix}_{setting}");
        Ok(HttpSettings {
            name,
            host: settings.optional(&named("HOST"), "an address to bind", "0.0.0.0".to_owned())?,
            port: settings.required(&named("PORT"), "a port number")?,
            admin_host: settings.optional(
                &named("ADMIN_HOST"),
                "an address to bind",
                "127.0.0.1".to_owned(),
            )?,
            admin_port: settings.optional(&named("ADMIN_PORT"), "a port number", admin_port)?,
            max_in_flight: settings.optional_in(
                &named("MAX_IN_FLIGHT"),
                "a request count, at least 1",
                4096usize,
                1..,
            )?,
            request_timeout: settings.millis(&named("REQUEST_TIMEOUT_MS"), 5000)?,
            auth: AuthSettings::read(settings)?,
        })
    }

    /// The bridge handlers reach the stores through, on this runtime,
    /// bounded by these settings.
    pub fn bridge(&self) -> Bridge {
        Bridge::new(
            tokio::runtime::Handle::current(),
            self.max_in_flight,
            self.request_timeout,
        )
    }
}

/// A service on its way up: its database created, migrated and pooled,
/// its metrics registry, the signal its workers will watch, and the bridge
/// its handlers will reach the stores through. It starts its own workers
/// from these, then [`Starting::serve`]s.
pub struct Starting {
    /// The runtime role's connections (everything the service serves) and
    /// the owner's (partition upkeep, retention, vacuum).
    pub pools: Pools,
    pub metrics: Metrics,
    /// Fired after the HTTP drain; every worker watches it.
    pub stop: Signal,
    pub bridge: Bridge,
    /// Who may call what; its key refresher is drained with the workers.
    pub auth: Authenticator,
    key_refresher: Option<JoinHandle<()>>,
}

impl Starting {
    /// Prepares the service's database (`migrations` applied), its token
    /// checks (the issuer's keys read) and the rest.
    pub async fn prepare(
        database: &DatabaseSettings,
        migrations: &[MigrationSet],
        http: &HttpSettings,
    ) -> Result<Self, StartupError> {
        let pools = database.prepare(migrations).await?;
        let metrics = Metrics::new();
        let stop = Signal::new();
        let bridge = http.bridge();
        let (auth, key_refresher) =
            Authenticator::start(&http.auth, bridge.clone(), metrics.registry(), stop.clone())
                .await?;
        Ok(Starting {
            pools,
            metrics,
            stop,
            bridge,
            auth,
            key_refresher,
        })
    }

    /// Binds the HTTP server and serves `routes` with the operational ones
    /// around them (its `openapi` description, readiness pinging the
    /// database and reporting the `broker`). The `workers` stop after the
    /// HTTP drain.
    pub fn serve<R: Routes>(
        self,
        http: &HttpSettings,
        openapi: &'static str,
        routes: R,
        broker: BrokerProbe,
        mut workers: Vec<JoinHandle<()>>,
    ) -> Result<Running, StartupError> {
        workers.extend(self.key_refresher);
        let ops = Ops {
            metrics: self.metrics.clone(),
            openapi,
            bridge: self.bridge,
            database: self.pools.runtime,
            database_name: http.name,
            broker,
            readiness: ReadinessMetrics::register(self.metrics.registry())?,
            auth: self.auth.clone(),
        };
        let api = Arc::new(Api::new(routes, ops, self.auth));
        let admin = Arc::new(Admin(api.clone()));
        Running::start(http, (api, admin), &self.metrics, self.stop, workers)
    }
}

/// A service that is serving: its HTTP server and background workers.
pub struct Running {
    name: &'static str,
    server: Server,
    admin: Server,
    stop_workers: Signal,
    workers: Vec<JoinHandle<()>>,
}

impl Running {
    /// Binds the settings' two addresses (port 0 picks a free one) and
    /// serves the public `api` on one and the `admin` routes on the
    /// other. `stop_workers` is the signal the `workers` watch.
    pub fn start(
        settings: &HttpSettings,
        (api, admin): (Arc<dyn Service>, Arc<dyn Service>),
        metrics: &Metrics,
        stop_workers: Signal,
        workers: Vec<JoinHandle<()>>,
    ) -> Result<Self, StartupError> {
        let http = HttpMetrics::register(metrics.registry())?;
        let bind = |host: &str, port: u16, service: Arc<dyn Service>| {
            let addr = format!("{host}:{port}");
            Server::bind(
                addr.as_str(),
                service,
                http.clone(),
                ServerOptions::default(),
            )
            .map_err(|source| StartupError::Bind { addr, source })
        };
        let server = bind(&settings.host, settings.port, api)?;
        let admin = bind(&settings.admin_host, settings.admin_port, admin)?;
        tracing::info!(service = settings.name, addr = %server.local_addr(), "listening");
        tracing::info!(
            service = settings.name,
            addr = %admin.local_addr(),
            "admin listening (/metrics, /readyz, /healthz)"
        );
        Ok(Running {
            name: settings.name,
            server,
            admin,
            stop_workers,
            workers,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin.local_addr()
    }

    /// Serves until `shutdown` completes, then drains in order.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        tracing::info!(service = self.name, "stopping: draining connections");
        let (public, admin) = tokio::join!(
            self.server.shutdown(HTTP_DRAIN),
            self.admin.shutdown(HTTP_DRAIN)
        );
        if !(public && admin) {
            tracing::warn!(
                service = self.name,
                "some connections were still open after {HTTP_DRAIN:?}"
            );
        }
        self.stop_workers.cancel();
        let deadline = tokio::time::Instant::now() + WORKER_DRAIN;
        for worker in self.workers {
            let _ = tokio::time::timeout_at(deadline, worker).await;
        }
        tracing::info!(service = self.name, "stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_settings_carry_the_services_prefix() {
        let source = vec![
            ("AUTH_DISABLED", "true"),
            ("ORDER_PORT", "8080"),
            ("ORDER_MAX_IN_FLIGHT", "10"),
            ("PRODUCT_PORT", "3000"),
            ("PRODUCT_MAX_IN_FLIGHT", "0"),
        ];
        let settings = Settings::new(&source);
        let order = HttpSettings::read(&settings, "order", 9380).unwrap();
        assert_eq!((order.host.as_str(), order.port), ("0.0.0.0", 8080));
        assert_eq!(
            (order.admin_host.as_str(), order.admin_port),
            ("127.0.0.1", 9380)
        );
        assert_eq!(order.max_in_flight, 10);
        assert_eq!(order.request_timeout, Duration::from_secs(5));
        let error = HttpSettings::read(&settings, "product", 9330).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("PRODUCT_MAX_IN_FLIGHT is not valid"),
            "{error}"
        );
    }
}
