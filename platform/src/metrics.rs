//! The Prometheus registry an application owns, with the process's own
//! figures (CPU seconds, resident memory, threads, open files) collected
//! at each scrape by the `prometheus` crate's process collector.
//!
//! Each application has its own registry (not a process-global one), so
//! tests that run several applications in one process read their own
//! figures.

use prometheus::{Encoder, Registry, TextEncoder};

/// Latency buckets in seconds: fine below 20 ms, where the targets are.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// An application's metrics registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        // `process_cpu_seconds_total`, `process_resident_memory_bytes` and
        // the rest, read from /proc at each scrape (Linux; nothing elsewhere).
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("the first registration of a collector succeeds");
        Metrics { registry }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn render(&self) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_figures_appear_in_the_rendered_text() {
        let text = Metrics::new().render();
        for name in [
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_threads",
        ] {
            assert!(
                text.contains(&format!("\n{name} ")),
                "{name} missing:\n{text}"
            );
        }
    }
}
