//! `perf load`: open-loop load at a constant rate or stepped up.

use std::path::PathBuf;

use anyhow::Context;
use perf::seed::Seed;

use crate::environment::{order_url, product_url, read_json, write_json};

#[derive(clap::Args)]
pub(crate) struct LoadArgs {
    #[arg(long, value_enum, default_value = "orders")]
    scenario: perf::load::Scenario,
    /// Requests per second (without --ramp).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds at that rate (without --ramp).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Report the constant rate in windows of this many seconds (one
    /// line each: a soak's minute by minute), not as one.
    #[arg(long)]
    window_seconds: Option<u64>,
    /// Step the rate up: from --step-rate by --step-rate every
    /// --step-seconds up to --max-rate.
    #[arg(long)]
    ramp: bool,
    #[arg(long, default_value_t = 1000)]
    step_rate: u64,
    #[arg(long, default_value_t = 20)]
    step_seconds: u64,
    #[arg(long, default_value_t = 8000)]
    max_rate: u64,
    /// Connections to each service at most.
    #[arg(long, default_value_t = 256)]
    connections: usize,
    /// The seed file `perf seed` wrote.
    #[arg(long)]
    seed: PathBuf,
    /// Where the JSON summary goes.
    #[arg(long)]
    out: PathBuf,
}

/// `host:port` of an `http://` URL, resolved.
fn socket_addr(url: &str) -> anyhow::Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    host.to_socket_addrs()?
        .next()
        .with_context(|| format!("{url} does not resolve"))
}

pub(crate) async fn load(args: LoadArgs) -> anyhow::Result<()> {
    let seed: Seed = serde_json::from_value(read_json(&args.seed)?)?;
    let steps = if args.ramp {
        anyhow::ensure!(args.step_rate > 0, "--step-rate must be above 0");
        (1..=args.max_rate / args.step_rate)
            .map(|n| perf::load::Step {
                rate: n * args.step_rate,
                seconds: args.step_seconds,
            })
            .collect()
    } else {
        let window = args
            .window_seconds
            .unwrap_or(args.seconds)
            .clamp(1, args.seconds.max(1));
        (0..args.seconds.div_ceil(window))
            .map(|n| perf::load::Step {
                rate: args.rate,
                seconds: window.min(args.seconds - n * window),
            })
            .collect()
    };
    let plan = perf::load::Plan {
        scenario: args.scenario,
        steps,
        connections: args.connections.max(1),
        order: socket_addr(&order_url())?,
        product: socket_addr(&product_url())?,
        watched: perf::cpu::pipeline_processes(),
        tokens: perf::tokens::Tokens::from_env()?,
    };
    let summary = perf::load::run(&plan, &seed).await?;
    for step in &summary.steps {
        println!(
            "{:>6} req/s offered: {:>7.0} achieved, p50 {:>7.2} ms, p99 {:>8.2} ms, {} errors",
            step.target, step.achieved, step.p50_ms, step.p99_ms, step.errors
        );
    }
    println!(
        "generator CPU: {:.1} µs per request",
        summary.generator_cpu_us_per_request
    );
    write_json(&args.out, &summary)
}
