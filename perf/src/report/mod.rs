//! The load report: reading what a run left (the generator's summary, the
//! services' metrics before and after), what an order cost ([`costs`]),
//! and the page that says PASS or FAIL ([`page`]).

pub mod costs;
pub mod page;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// A Prometheus histogram's cumulative buckets (upper bound → count).
pub type Buckets = Vec<(f64, f64)>;

/// The cumulative buckets of histogram `name` whose labels contain
/// `label` (empty: any), summed over matching series.
pub fn histogram(text: &str, name: &str, label: &str) -> Buckets {
    let prefix = format!("{name}_bucket{{");
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|line| line.starts_with(&prefix) && line.contains(label))
    {
        let Some(le) = line
            .split("le=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
        else {
            continue;
        };
        let Some(value) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        *sums.entry(le.to_owned()).or_default() += value;
    }
    let mut buckets: Buckets = sums
        .into_iter()
        .map(|(le, count)| {
            (
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::INFINITY)
                },
                count,
            )
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// `after - before`, bucket by bucket.
pub fn delta(before: &Buckets, after: &Buckets) -> Buckets {
    after
        .iter()
        .map(|(le, count)| {
            let earlier = before
                .iter()
                .find(|(b, _)| b == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, count - earlier)
        })
        .collect()
}

/// The `q` quantile of a cumulative histogram, interpolated linearly
/// inside its bucket (as Prometheus's histogram_quantile does).
pub fn quantile(buckets: &Buckets, q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for (le, count) in buckets {
        if *count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let span = count - lower.1;
            let within = if span > 0.0 {
                (rank - lower.1) / span
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * within);
        }
        lower = (*le, *count);
    }
    None
}

/// A gauge or counter's value (first series whose labels contain `label`).
pub fn value(text: &str, name: &str, label: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| {
            (line.starts_with(&format!("{name} ")) || line.starts_with(&format!("{name}{{")))
                && line.contains(label)
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// What k6 measured, from its summary JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct K6Figures {
    pub requests: f64,
    pub rate: f64,
    pub failed_rate: f64,
    pub dropped: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

/// Reads the overall figures, or those of one tag (`{stage:3000}`).
pub fn k6_figures(summary: &Value, tag: &str) -> K6Figures {
    let metric = |name: &str, stat: &str| {
        summary["metrics"][format!("{name}{tag}")]["values"][stat]
            .as_f64()
            .unwrap_or(0.0)
    };
    K6Figures {
        requests: metric("http_reqs", "count"),
        rate: metric("http_reqs", "rate"),
        failed_rate: metric("http_req_failed", "rate"),
        dropped: summary["metrics"]["dropped_iterations"]["values"]["count"]
            .as_f64()
            .unwrap_or(0.0),
        p50_ms: metric("http_req_duration", "med"),
        p95_ms: metric("http_req_duration", "p(95)"),
        p99_ms: metric("http_req_duration", "p(99)"),
    }
}

/// One step of a ramp and whether it held.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub target: u64,
    pub achieved: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub failed_rate: f64,
    pub held: bool,
}

/// The steps of a k6 ramp, from the `stage` tags its requests carry,
/// judged by [`page::held`].
pub fn ramp_steps(summary: &Value, step_seconds: f64) -> Vec<Step> {
    let mut targets: Vec<u64> = summary["metrics"]
        .as_object()
        .map(|metrics| {
            metrics
                .keys()
                .filter_map(|key| {
                    key.strip_prefix("http_reqs{stage:")?
                        .strip_suffix('}')?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default();
    targets.sort_unstable();
    targets
        .into_iter()
        .map(|target| {
            let figures = k6_figures(summary, &format!("{{stage:{target}}}"));
            let achieved = figures.requests / step_seconds;
            Step {
                target,
                achieved,
                p50_ms: figures.p50_ms,
                p99_ms: figures.p99_ms,
                failed_rate: figures.failed_rate,
                held: page::held(figures.p99_ms, figures.failed_rate, achieved, target),
            }
        })
        .collect()
}

/// The highest target of an unbroken run of held steps from the start.
pub fn knee(steps: &[Step]) -> Option<u64> {
    steps
        .iter()
        .take_while(|step| step.held)
        .last()
        .map(|step| step.target)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP order_confirm_lag_seconds lag
order_confirm_lag_seconds_bucket{status=\"CONFIRMED\",le=\"0.01\"} 10
order_confirm_lag_seconds_bucket{status=\"CONFIRMED\",le=\"0.1\"} 90
order_confirm_lag_seconds_bucket{status=\"CONFIRMED\",le=\"1\"} 100
order_confirm_lag_seconds_bucket{status=\"CONFIRMED\",le=\"+Inf\"} 100
order_confirm_lag_seconds_bucket{status=\"REJECTED\",le=\"0.01\"} 0
order_confirm_lag_seconds_bucket{status=\"REJECTED\",le=\"0.1\"} 0
order_confirm_lag_seconds_bucket{status=\"REJECTED\",le=\"1\"} 100
order_confirm_lag_seconds_bucket{status=\"REJECTED\",le=\"+Inf\"} 100
process_resident_memory_bytes 1048576
";

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let confirmed = histogram(TEXT, "order_confirm_lag_seconds", "CONFIRMED");
        let median = quantile(&confirmed, 0.5).unwrap();
        assert!((median - 0.055).abs() < 1e-9, "{median}");
        let both = histogram(TEXT, "order_confirm_lag_seconds", "");
        assert_eq!(both.last().unwrap().1, 200.0);
        let p99 = quantile(&both, 0.99).unwrap();
        assert!((p99 - (0.1 + 0.9 * 108.0 / 110.0)).abs() < 1e-9, "{p99}");
    }

    #[test]
    fn deltas_remove_what_came_before() {
        let before = vec![(0.1, 5.0), (f64::INFINITY, 10.0)];
        let after = vec![(0.1, 15.0), (f64::INFINITY, 30.0)];
        assert_eq!(
            delta(&before, &after),
            vec![(0.1, 10.0), (f64::INFINITY, 20.0)]
        );
    }

    #[test]
    fn gauges_are_read() {
        assert_eq!(
            value(TEXT, "process_resident_memory_bytes", ""),
            Some(1_048_576.0)
        );
    }

    #[test]
    fn the_knee_is_the_last_step_held_before_one_breaks() {
        let summary = serde_json::json!({"metrics": {
            "http_reqs{stage:1000}": {"values": {"count": 10000.0}},
            "http_req_duration{stage:1000}": {"values": {"p(99)": 5.0}},
            "http_req_failed{stage:1000}": {"values": {"rate": 0.0}},
            "http_reqs{stage:2000}": {"values": {"count": 20000.0}},
            "http_req_duration{stage:2000}": {"values": {"p(99)": 15.0}},
            "http_req_failed{stage:2000}": {"values": {"rate": 0.0}},
            "http_reqs{stage:3000}": {"values": {"count": 24000.0}},
            "http_req_duration{stage:3000}": {"values": {"p(99)": 45.0}},
            "http_req_failed{stage:3000}": {"values": {"rate": 0.0}},
        }});
        let steps = ramp_steps(&summary, 10.0);
        assert_eq!(
            steps.iter().map(|s| s.held).collect::<Vec<_>>(),
            [true, true, false]
        );
        assert_eq!(knee(&steps), Some(2000));
    }
}
