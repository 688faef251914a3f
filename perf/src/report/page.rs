//! The one page a load run ends with (`perf report`): the generator's
//! figures (k6's summary or `perf load`'s), the services' metrics before
//! and after, what an order cost each process and database, the invariant
//! check, the ceilings, and PASS or FAIL against the thresholds. A ramp
//! also gets its chart, `ramp.svg`, beside the report.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::costs;
use super::{K6Figures, Step, delta, histogram, k6_figures, knee, quantile, ramp_steps, value};
use crate::chart::{RampPoint, ramp_svg};
use crate::cpu::CpuSnapshot;
use crate::pgstat::{DatabaseCounters, WalCounters};

/// What `perf scrape` saves before and after a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// Both services' `/metrics` text.
    pub order: String,
    pub product: String,
    #[serde(default)]
    pub cpu: CpuSnapshot,
    #[serde(default)]
    pub databases: std::collections::BTreeMap<String, DatabaseCounters>,
    /// The server's WAL counters (absent from reports made before them).
    #[serde(default)]
    pub wal: Option<WalCounters>,
}

/// The latency limit of every step and run (p99).
const P99_LIMIT_MS: f64 = 20.0;

fn read(dir: &Path, name: &str) -> anyhow::Result<Value> {
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path)
        .map_err(|error| anyhow::anyhow!("reading {}: {error}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn mb(bytes: Option<f64>) -> String {
    bytes.map_or("?".into(), |b| format!("{:.0} MB", b / 1_048_576.0))
}

/// The generator's figures: overall, and per step for a ramp.
struct Generated {
    name: &'static str,
    overall: K6Figures,
    steps: Vec<Step>,
    /// CPU of the pipeline's processes per step (perf load only).
    step_cpu: Vec<Option<f64>>,
    cpu_us_per_request: Option<f64>,
}

fn generated(dir: &Path, run: &Value) -> anyhow::Result<Generated> {
    if let Ok(summary) = read(dir, "load-summary.json") {
        let steps: Vec<Step> = summary["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|step| {
                let target = step["target"].as_u64().unwrap_or(0);
                let sent = step["sent"].as_f64().unwrap_or(0.0).max(1.0);
                let achieved = step["achieved"].as_f64().unwrap_or(0.0);
                let failed_rate = step["errors"].as_f64().unwrap_or(0.0) / sent;
                let p99_ms = step["p99_ms"].as_f64().unwrap_or(f64::INFINITY);
                Step {
                    target,
                    achieved,
                    p50_ms: step["p50_ms"].as_f64().unwrap_or(0.0),
                    p99_ms,
                    failed_rate,
                    held: held(p99_ms, failed_rate, achieved, target),
                }
            })
            .collect();
        let step_cpu = summary["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|step| {
                let orders = step["orders"].as_f64()?;
                let cpu = step["cpu"].as_object()?;
                let seconds: f64 = costs::PIPELINE
                    .iter()
                    .filter_map(|(name, _)| cpu.get(*name)?.as_f64())
                    .sum();
                (orders > 0.0).then(|| 1e6 * seconds / orders)
            })
            .collect();
        let total = &summary["total"];
        let sent = total["sent"].as_f64().unwrap_or(0.0);
        let overall = K6Figures {
            requests: sent,
            rate: total["achieved"].as_f64().unwrap_or(0.0),
            failed_rate: total["errors"].as_f64().unwrap_or(0.0) / sent.max(1.0),
            dropped: 0.0,
            p50_ms: total["p50_ms"].as_f64().unwrap_or(0.0),
            p95_ms: total["p95_ms"].as_f64().unwrap_or(0.0),
            p99_ms: total["p99_ms"].as_f64().unwrap_or(0.0),
        };
        return Ok(Generated {
            name: "perf load",
            overall,
            steps,
            step_cpu,
            cpu_us_per_request: summary["generator_cpu_us_per_request"].as_f64(),
        });
    }
    let summary = read(dir, "k6-summary.json")?;
    let overall = k6_figures(&summary, "");
    let steps = ramp_steps(&summary, run["step_seconds"].as_f64().unwrap_or(20.0));
    let cpu_us_per_request = run["k6_cpu_seconds"]
        .as_f64()
        .filter(|_| overall.requests > 0.0)
        .map(|seconds| 1e6 * seconds / overall.requests);
    Ok(Generated {
        name: "k6",
        overall,
        step_cpu: vec![None; steps.len()],
        steps,
        cpu_us_per_request,
    })
}

/// Whether a step held: p99 under the limit, errors under 0.1%, and 99%
/// of the offered rate achieved.
pub fn held(p99_ms: f64, failed_rate: f64, achieved: f64, target: u64) -> bool {
    p99_ms < P99_LIMIT_MS && failed_rate < 0.001 && achieved >= 0.99 * target as f64
}

/// Prints the report of the run in `dir`; returns whether it passed. Also
/// writes `costs.json` and, for a ramp, `ramp.svg` there.
pub fn print(dir: &Path) -> anyhow::Result<bool> {
    let run = read(dir, "run.json")?;
    let before: Snapshot = serde_json::from_value(read(dir, "metrics-before.json")?)?;
    let after: Snapshot = serde_json::from_value(read(dir, "metrics-after.json")?)?;
    let check = read(dir, "check.json")
        .unwrap_or(json!({"holds": false, "violations": ["no invariant check ran"]}));
    let ceilings = read(dir, "ceilings.json").ok();
    let generated = generated(dir, &run)?;
    let figures = &generated.overall;
    let rate = run["rate"].as_f64().unwrap_or(0.0);
    let scenario = run["scenario"].as_str().unwrap_or("?");
    let ramp = scenario == "ramp";
    let lag = delta(
        &histogram(&before.order, "order_confirm_lag_seconds", ""),
        &histogram(&after.order, "order_confirm_lag_seconds", ""),
    );
    let lag_p50 = quantile(&lag, 0.5).map(|s| s * 1000.0);
    let lag_p99 = quantile(&lag, 0.99).map(|s| s * 1000.0);
    let shape = if ramp {
        format!(
            "from {} req/s up by {} every {} s to {}",
            run["step_rate"], run["step_rate"], run["step_seconds"], run["max_rate"]
        )
    } else {
        format!(
            "target {rate:.0} req/s for {}",
            run["duration"].as_str().unwrap_or("?")
        )
    };
    let mut lines = vec![format!(
        "load run: scenario {scenario}, {shape}, generator {}, {}",
        generated.name,
        dir.display()
    )];
    lines.push(format!(
        "  achieved        {:.1} req/s ({:.0} requests), {:.0} dropped iterations",
        figures.rate, figures.requests, figures.dropped
    ));
    lines.push(format!(
        "  latency         p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms",
        figures.p50_ms, figures.p95_ms, figures.p99_ms
    ));
    lines.push(format!(
        "  errors          {:.3}% of requests",
        100.0 * figures.failed_rate
    ));
    let fmt_ms = |ms: Option<f64>| ms.map_or("?".into(), |ms| format!("{ms:.0} ms"));
    lines.push(format!(
        "  confirm lag     p50 {}, p99 {} (201 → CONFIRMED/REJECTED)",
        fmt_ms(lag_p50),
        fmt_ms(lag_p99)
    ));
    lines.push(format!(
        "  invariants      {} ({} orders: {} CONFIRMED, {} REJECTED, {} PENDING; drained {:.1}s after the load)",
        if check["holds"].as_bool() == Some(true) { "hold" } else { "BROKEN" },
        check["orders"], check["confirmed"], check["rejected"], check["pending"],
        check["drain_seconds"].as_f64().unwrap_or(0.0)
    ));
    for violation in check["violations"].as_array().into_iter().flatten() {
        lines.push(format!("    {}", violation.as_str().unwrap_or("")));
    }
    let rss = |text: &str| mb(value(text, "process_resident_memory_bytes", ""));
    lines.push(format!(
        "  memory (RSS)    order {} → {}, product {} → {}",
        rss(&before.order),
        rss(&after.order),
        rss(&before.product),
        rss(&after.product)
    ));
    let created =
        |text: &str| value(text, "order_writer_jobs_total", "outcome=\"created\"").unwrap_or(0.0);
    let orders = created(&after.order) - created(&before.order);
    let mut costs = costs::per_order(
        orders,
        &before.cpu,
        &after.cpu,
        &before.databases,
        &after.databases,
    );
    if let (Some(before), Some(after)) = (before.wal, after.wal) {
        costs.wal = Some(after.per(&before, orders));
    }
    costs.generator_cpu_us_per_request = generated.cpu_us_per_request;
    lines.extend(costs.lines(generated.name));
    std::fs::write(dir.join("costs.json"), serde_json::to_vec_pretty(&costs)?)?;
    let mut pass = figures.failed_rate < 0.001 && check["holds"].as_bool() == Some(true);
    if ramp {
        lines.extend(ramp_lines(dir, &generated)?);
    } else {
        pass &= figures.p99_ms < P99_LIMIT_MS && lag_p99.is_some_and(|lag| lag < 500.0);
    }
    if let Some(ceilings) = &ceilings {
        lines.extend(ceiling_lines(ceilings, figures.rate));
    }
    lines.push(
        if ramp {
            "  thresholds      errors < 0.1%, invariants hold (latency: see the knee)"
        } else {
            "  thresholds      errors < 0.1%, p99 < 20 ms, confirm lag p99 < 500 ms, invariants hold"
        }
        .to_owned(),
    );
    lines.push(format!(
        "  result          {}",
        if pass { "PASS" } else { "FAIL" }
    ));
    let text = lines.join("\n");
    println!("{text}");
    std::fs::write(dir.join("report.txt"), format!("{text}\n"))?;
    Ok(pass)
}

fn ramp_lines(dir: &Path, generated: &Generated) -> anyhow::Result<Vec<String>> {
    let mut lines = Vec::new();
    for (step, cpu) in generated.steps.iter().zip(&generated.step_cpu) {
        lines.push(format!(
            "    step {:>6} req/s: achieved {:>7.0}, p99 {:>7.2} ms, errors {:.3}%{} {}",
            step.target,
            step.achieved,
            step.p99_ms,
            100.0 * step.failed_rate,
            cpu.map_or(String::new(), |us| format!(", {us:.0} µs CPU per order")),
            if step.held { "held" } else { "broke" }
        ));
    }
    let knee = knee(&generated.steps);
    lines.push(format!(
        "  knee            {} req/s (highest step with p99 < 20 ms, errors < 0.1%, 99% of the rate achieved)",
        knee.map_or("none".into(), |k| k.to_string())
    ));
    let points: Vec<RampPoint> = generated
        .steps
        .iter()
        .zip(&generated.step_cpu)
        .map(|(step, cpu)| RampPoint {
            offered: step.target as f64,
            achieved: step.achieved,
            p50_ms: step.p50_ms,
            p99_ms: step.p99_ms,
            cpu_us_per_order: *cpu,
        })
        .collect();
    if !points.is_empty() {
        let chart = dir.join("ramp.svg");
        ramp_svg(
            &chart,
            &format!("ramp ({}), {}", generated.name, dir.display()),
            &points,
            knee.map(|k| k as f64),
        )?;
        lines.push(format!("  chart           {}", chart.display()));
    }
    Ok(lines)
}

fn ceiling_lines(ceilings: &Value, rate: f64) -> Vec<String> {
    let figure = |name: &str| ceilings[name].as_f64().unwrap_or(0.0);
    let (single, batched, broker, noop) = (
        figure("postgres_orders_per_sec_single"),
        figure("postgres_orders_per_sec_batched"),
        figure("broker_messages_per_sec"),
        figure("http_noop_requests_per_sec"),
    );
    let share = |ceiling: f64| {
        if ceiling > 0.0 {
            format!("{:.1}%", 100.0 * rate / ceiling)
        } else {
            "?".into()
        }
    };
    vec![
        format!(
            "  ceilings        PostgreSQL {single:.0} orders/s (1 per tx), {batched:.0} (100 per tx); RabbitMQ {broker:.0} msg/s; HTTP no-op {noop:.0} req/s"
        ),
        format!(
            "  as a share      {} of batched PostgreSQL, {} of one-per-tx PostgreSQL, {} of the broker, {} of the HTTP no-op",
            share(batched),
            share(single),
            share(broker),
            share(noop)
        ),
    ]
}
