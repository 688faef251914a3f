//! The Prometheus registry an application owns, and the HTTP metrics the
//! server core records.
//!
//! Each `Application` has its own registry (not a process-global one), so
//! tests that run several applications in one process read their own
//! figures.

use std::time::Duration;

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Latency buckets in seconds: fine below 20 ms, where the targets are.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// An application's metrics registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    resident_memory: IntGauge,
    cpu_seconds: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let resident_memory = IntGauge::new(
            "process_resident_memory_bytes",
            "Resident memory of this process, read at each scrape",
        )
        .expect("a constant metric definition is valid");
        let cpu_seconds = Gauge::new(
            "process_cpu_seconds_total",
            "CPU time (user and system) this process has used, read at each scrape",
        )
        .expect("a constant metric definition is valid");
        registry
            .register(Box::new(resident_memory.clone()))
            .expect("the first registration of a name succeeds");
        registry
            .register(Box::new(cpu_seconds.clone()))
            .expect("the first registration of a name succeeds");
        Metrics {
            registry,
            resident_memory,
            cpu_seconds,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn render(&self) -> String {
        if let Some(bytes) = resident_memory_bytes() {
            self.resident_memory.set(bytes);
        }
        if let Some(seconds) = cpu_seconds() {
            self.cpu_seconds.set(seconds);
        }
        let mut out = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(%error, "metrics could not be encoded");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Resident set size from `/proc/self/statm` (Linux), in bytes.
pub fn resident_memory_bytes() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// User plus system CPU time from `/proc/self/stat` (Linux), in seconds.
/// Clock ticks are 100 per second on every Linux this runs on (USER_HZ).
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    Some((user + system) / 100.0)
}

/// Requests by route and status, and latency by route.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    latency: HistogramVec,
}

impl HttpMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests answered"),
            &["route", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time from a decoded request to its encoded answer",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        Ok(HttpMetrics { requests, latency })
    }

    pub fn observe(&self, route: &str, status: u16, elapsed: Duration) {
        let mut digits = [b'0'; 3];
        self.requests
            .with_label_values(&[route, status_text(status, &mut digits)])
            .inc();
        self.latency
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }
}

/// A three-digit status as text without allocating.
fn status_text(status: u16, digits: &mut [u8; 3]) -> &str {
    let status = status.min(999);
    digits[0] = b'0' + (status / 100) as u8;
    digits[1] = b'0' + (status / 10 % 10) as u8;
    digits[2] = b'0' + (status % 10) as u8;
    std::str::from_utf8(digits).unwrap_or("000")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_metrics_appear_in_the_rendered_text() {
        let metrics = Metrics::new();
        let http = HttpMetrics::register(metrics.registry()).unwrap();
        http.observe("/products/:id", 404, Duration::from_millis(3));
        let text = metrics.render();
        assert!(text.contains(r#"http_requests_total{route="/products/:id",status="404"} 1"#));
        assert!(text.contains("http_request_duration_seconds_bucket"));
        assert!(text.contains("process_resident_memory_bytes"));
        assert!(text.contains("process_cpu_seconds_total"));
    }
}
