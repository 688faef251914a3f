//! The operational endpoints both services serve the same way: liveness,
//! readiness with one line per dependency, and Prometheus metrics.

use serde_json::{Map, Value};

use super::Response;
use crate::metrics::Metrics;

/// `GET /healthz`: the process answers.
pub fn liveness() -> Response {
    Response::json(200, &serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when every required dependency is up, else 503.
/// `checks` are (name, up, required); an optional one is reported only.
/// `brokers` names where each of the process's broker connections went
/// (connection name, node), under `"brokers"`.
pub fn readiness(checks: &[(&str, bool, bool)], brokers: &[(String, String)]) -> Response {
    let ready = checks.iter().all(|(_, up, required)| *up || !*required);
    let mut body = Map::new();
    body.insert(
        "status".into(),
        Value::from(if ready { "ready" } else { "unavailable" }),
    );
    for (name, up, _) in checks {
        body.insert((*name).into(), Value::from(if *up { "up" } else { "down" }));
    }
    let brokers: Map<String, Value> = brokers
        .iter()
        .map(|(connection, node)| (connection.clone(), Value::from(node.as_str())))
        .collect();
    body.insert("brokers".into(), Value::Object(brokers));
    let response = Response::json(if ready { 200 } else { 503 }, &body);
    if ready {
        response
    } else {
        response.with_header("Retry-After", "1")
    }
}

/// `GET /metrics`: the Prometheus text exposition.
pub fn metrics(metrics: &Metrics) -> Response {
    Response::with_body(200, "text/plain; version=0.0.4", metrics.render())
}
