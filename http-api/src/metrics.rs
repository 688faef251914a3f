//! What the HTTP server records of each request: a count by route and
//! status, and the latency by route.

use std::time::Duration;

use platform::metrics::LATENCY_BUCKETS;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

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
        let status = http::StatusCode::from_u16(status);
        let status = status.as_ref().map_or("000", http::StatusCode::as_str);
        self.requests.with_label_values(&[route, status]).inc();
        self.latency
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use platform::metrics::Metrics;

    #[test]
    fn http_metrics_appear_in_the_rendered_text() {
        let metrics = Metrics::new();
        let http = HttpMetrics::register(metrics.registry()).unwrap();
        http.observe("/products/:id", 404, Duration::from_millis(3));
        let text = metrics.render();
        assert!(text.contains(r#"http_requests_total{route="/products/:id",status="404"} 1"#));
        assert!(text.contains("http_request_duration_seconds_bucket"));
    }
}
