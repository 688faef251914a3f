//! The routes every service serves the same way around its own. On the
//! public listener: liveness and the service's OpenAPI description. On
//! the admin listener (127.0.0.1 by default: what it tells is for
//! operators, and each readiness check or scrape reaches the stores):
//! liveness, readiness with one line per dependency, and Prometheus
//! metrics. [`crate::router`] puts them around a service's own routes.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use deadpool_postgres::Pool;
use platform::metrics::Metrics;
use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};
use serde_json::{Map, Value};

use crate::Response;
use crate::auth::Authenticator;
use crate::bridge::Bridge;
use crate::error::ApiError;

/// A route's name (the metrics label) and its answer.
pub type Routed = (&'static str, Result<Response, ApiError>);

/// Whether a store answers, checked on tokio.
pub type StoreProbe = Pin<Box<dyn Future<Output = bool> + Send>>;

/// Whether the broker is reached, and where each of the process's broker
/// connections went (connection name, node).
pub type BrokerProbe = Box<dyn Fn() -> (bool, Vec<(String, String)>) + Send + Sync>;

/// What the operational routes read.
pub struct Ops {
    pub metrics: Metrics,
    /// The service's OpenAPI description (JSON), served at `/openapi.json`.
    pub openapi: &'static str,
    /// How readiness reaches the stores without blocking a may worker.
    pub bridge: Bridge,
    /// The service's database, which readiness reaches; named after the
    /// service in `databases`, with the server its pool reached.
    pub database: Pool,
    /// The service's name, which names its pool under `databases`.
    pub database_name: &'static str,
    /// The broker is reported, not required: the outbox holds events while
    /// it is away and requests are still served.
    pub broker: BrokerProbe,
    /// Readiness as metrics, set by every readiness check and scrape.
    pub readiness: ReadinessMetrics,
    /// Whether tokens are checked (readiness says so) and keys are held
    /// (required when they are).
    pub auth: Authenticator,
}

/// The longest a readiness probe of one store waits for its answer:
/// shorter than a scrape's timeout (10 s in deploy/prometheus) and than
/// the request deadline the bridge enforces (5 s by default).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The broker's name among the checks; reported, not required.
const BROKER: &str = "rabbitmq";
/// The issuer's signing keys among the checks, when tokens are checked:
/// without one every token is refused.
const ISSUER_KEYS: &str = "issuer_keys";

/// Readiness as metrics: `service_ready` (1 when `/readyz` would answer
/// 200) and `dependency_up{dependency}` (1 when it was reached), from the
/// same checks as `/readyz`, made again at each scrape.
#[derive(Clone)]
pub struct ReadinessMetrics {
    ready: IntGauge,
    dependencies: IntGaugeVec,
}

impl ReadinessMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = ReadinessMetrics {
            ready: IntGauge::new(
                "service_ready",
                "1 when every required dependency answers (/readyz answers 200)",
            )?,
            dependencies: IntGaugeVec::new(
                Opts::new(
                    "dependency_up",
                    "1 when the dependency answered the last readiness check (postgres: a server that takes writes)",
                ),
                &["dependency"],
            )?,
        };
        registry.register(Box::new(metrics.ready.clone()))?;
        registry.register(Box::new(metrics.dependencies.clone()))?;
        Ok(metrics)
    }

    /// `probed`: whether the stores were probed at all; if not, only the
    /// broker's gauge is set (its probe reads the consumers' state, in
    /// the process).
    fn observe(&self, checked: &Checked, probed: bool) {
        if probed {
            self.ready.set(i64::from(checked.ready()));
        }
        for (name, up, _) in &checked.checks {
            if probed || *name == BROKER {
                self.dependencies
                    .with_label_values(&[name])
                    .set(i64::from(*up));
            }
        }
    }
}

/// What one readiness check found.
struct Checked {
    /// (dependency, up, required).
    checks: Vec<(&'static str, bool, bool)>,
    brokers: Vec<(String, String)>,
    databases: Vec<(String, String)>,
}

impl Checked {
    fn ready(&self) -> bool {
        is_ready(&self.checks)
    }
}

fn is_ready(checks: &[(&str, bool, bool)]) -> bool {
    checks.iter().all(|(_, up, required)| *up || !*required)
}

impl Ops {
    /// The public operational route `segments` name, if they name one.
    pub fn public_route(&self, segments: &[&str], method: &str) -> Option<Routed> {
        Some(match (segments, method) {
            (["healthz"], "GET") => ("/healthz", Ok(liveness())),
            (["openapi.json"], "GET") => (
                "/openapi.json",
                Ok(Response::with_body(200, "application/json", self.openapi)),
            ),
            (["healthz" | "openapi.json"], _) => {
                ("ops", Err(ApiError::MethodNotAllowed("GET".into())))
            }
            _ => return None,
        })
    }

    /// The admin listener's route `segments` name, if they name one;
    /// `stores` gives the service's required stores for readiness.
    pub fn admin_route(
        &self,
        segments: &[&str],
        method: &str,
        stores: impl FnOnce() -> Vec<(&'static str, StoreProbe)>,
    ) -> Option<Routed> {
        Some(match (segments, method) {
            (["healthz"], "GET") => ("/healthz", Ok(liveness())),
            (["readyz"], "GET") => {
                let checked = self.check(stores());
                let response = readiness(
                    &checked.checks,
                    &checked.brokers,
                    &checked.databases,
                    self.auth.holds_keys().is_some(),
                );
                ("/readyz", Ok(response))
            }
            (["metrics"], "GET") => {
                self.check(stores());
                (
                    "/metrics",
                    Ok(Response::with_body(
                        200,
                        "text/plain; version=0.0.4",
                        self.metrics.render(),
                    )),
                )
            }
            (["healthz" | "readyz" | "metrics"], _) => {
                ("ops", Err(ApiError::MethodNotAllowed("GET".into())))
            }
            _ => return None,
        })
    }

    /// Reaches the database and `stores` on tokio (through the bridge) and
    /// asks the broker probe; the readiness metrics take what it found. The
    /// database is up when a server that takes writes answers; which one is
    /// named under `databases`.
    fn check(&self, stores: Vec<(&'static str, StoreProbe)>) -> Checked {
        let database = self.database.clone();
        let (names, probes): (Vec<_>, Vec<_>) = stores.into_iter().unzip();
        let store_count = names.len();
        // Each probe has its own deadline, shorter than a scrape's: a store
        // that hangs is down by itself, and the others are still told.
        let stores = async move {
            let mut up = Vec::with_capacity(probes.len());
            for probe in probes {
                up.push(
                    tokio::time::timeout(PROBE_TIMEOUT, probe)
                        .await
                        .unwrap_or(false),
                );
            }
            up
        };
        let database = async move {
            tokio::time::timeout(PROBE_TIMEOUT, platform::db::reach(&database))
                .await
                .ok()
                .flatten()
        };
        let checked = self
            .bridge
            .run(async move { tokio::join!(database, stores) });
        // A check the bridge refused (too much in flight) or did not finish
        // by the request deadline counts every store down for `/readyz`,
        // but tells nothing of the stores: the gauges keep what the last
        // check found (an overload is not a database outage).
        let probed = checked.is_ok();
        let (server, stores) = checked.unwrap_or((None, vec![false; store_count]));
        let (broker, brokers) = (self.broker)();
        let database = server.as_ref().is_some_and(|server| !server.in_recovery);
        let databases: Vec<(String, String)> = server
            .map(|server| (self.database_name.to_owned(), server.to_string()))
            .into_iter()
            .collect();
        let mut checks = vec![("postgres", database, true)];
        checks.extend(
            names
                .into_iter()
                .zip(stores)
                .map(|(name, up)| (name, up, true)),
        );
        if let Some(held) = self.auth.holds_keys() {
            checks.push((ISSUER_KEYS, held, true));
        }
        checks.push((BROKER, broker, false));
        let checked = Checked {
            checks,
            brokers,
            databases,
        };
        self.readiness.observe(&checked, probed);
        checked
    }
}

/// `GET /healthz`: the process answers.
pub fn liveness() -> Response {
    Response::json(200, &serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when every required dependency is up, else 503.
/// `checks` are (name, up, required); an optional one is reported only.
/// `brokers` names where each of the process's broker connections went
/// (connection name, node), under `"brokers"`; `databases` the server each
/// connection pool reached (pool, `address:port/database`), under
/// `"databases"`; `"auth"` says whether tokens are checked (`"off"` when
/// `AUTH_DISABLED` turned the checks off).
pub fn readiness(
    checks: &[(&str, bool, bool)],
    brokers: &[(String, String)],
    databases: &[(String, String)],
    tokens_checked: bool,
) -> Response {
    let ready = is_ready(checks);
    let mut body = Map::new();
    body.insert(
        "status".into(),
        Value::from(if ready { "ready" } else { "unavailable" }),
    );
    for (name, up, _) in checks {
        body.insert((*name).into(), Value::from(if *up { "up" } else { "down" }));
    }
    let named = |nodes: &[(String, String)]| -> Value {
        Value::Object(
            nodes
                .iter()
                .map(|(name, node)| (name.clone(), Value::from(node.as_str())))
                .collect(),
        )
    };
    body.insert("brokers".into(), named(brokers));
    body.insert("databases".into(), named(databases));
    body.insert(
        "auth".into(),
        Value::from(if tokens_checked { "on" } else { "off" }),
    );
    let response = Response::json(if ready { 200 } else { 503 }, &body);
    if ready {
        response
    } else {
        response.with_header("Retry-After", "1")
    }
}
