//! `perf`: the measuring tools `make load` runs, one subcommand each.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use perf::invariants::{self, Stores};
use perf::report;
use perf::seed::Seed;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "perf",
    about = "Measure the pipeline: ceilings, load-run seeding, invariants, reports"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure PostgreSQL and RabbitMQ ceilings on this machine.
    Ceilings {
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Measure the relay draining committed rows, beside the broker ceiling.
    Relay {
        #[arg(long, default_value_t = 20_000)]
        rows: usize,
        /// Comma-separated packing factors to measure.
        #[arg(long, default_value = "1,50")]
        events_per_message: String,
        /// Runs per figure; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Relays draining at once (each its own connection).
        #[arg(long, default_value_t = 1)]
        relays: usize,
    },
    /// Create the products of a load run and write their initial stock.
    Seed {
        #[arg(long, default_value_t = 100)]
        products: usize,
        #[arg(long, default_value_t = 1_000_000)]
        stock: i64,
        #[arg(long, default_value_t = 10_000)]
        hot_stock: i64,
        #[arg(long)]
        out: PathBuf,
    },
    /// Save both services' /metrics, the CPU time of every process of the
    /// pipeline (from /proc) and both databases' counters.
    Scrape {
        #[arg(long)]
        out: PathBuf,
    },
    /// Open-loop load at a constant rate, or stepped up (a ramp); latency
    /// from each request's planned send time; a JSON summary for `report`.
    Load(LoadArgs),
    /// Wait until no order is PENDING and both outboxes are empty.
    Drain {
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
    },
    /// Wait for the pipeline to drain, then check every invariant.
    Check {
        #[arg(long)]
        seed: PathBuf,
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the load report of a run directory; fails if a threshold failed.
    Report {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Check that every order k6 saw accepted (its log of Location headers)
    /// exists and is decided: nothing acknowledged was lost.
    VerifyAccepted {
        #[arg(long)]
        log: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Hold many connections open (half idle, half sending a request one
    /// byte at a time) and measure how the service answers others meanwhile.
    HoldConnections {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Count the pipeline's dead letters: in both services' tables, and in
    /// the broker's dead-letter queues.
    DeadLetters {
        #[arg(long, env = "AMQP_NAMESPACE", default_value = "")]
        namespace: String,
    },
    /// Serve HTTP no-ops on the services' server core (the HTTP ceiling).
    NoopServer {
        #[arg(long, default_value_t = 9099)]
        port: u16,
    },
}

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set (load .env.example first)"))
}

fn database(name: &str) -> anyhow::Result<tokio_postgres::Config> {
    Ok(service::db::parse_url(name, &env(name)?)?)
}

async fn stores() -> anyhow::Result<Stores> {
    let prefix = std::env::var("REDIS_KEY_PREFIX").unwrap_or_default();
    Stores::connect(
        &database("ORDER_DATABASE_URL")?,
        &database("PRODUCT_DATABASE_URL")?,
        &env("REDIS_URL")?,
        &prefix,
    )
    .await
}

/// Where the product service answers: `PRODUCT_URL`, else its default port.
fn product_url() -> String {
    std::env::var("PRODUCT_URL").unwrap_or_else(|_| "http://127.0.0.1:3000".into())
}

/// Where the order service answers: `ORDER_URL`, else `ORDER_PORT`.
fn order_url() -> String {
    std::env::var("ORDER_URL").unwrap_or_else(|_| {
        format!(
            "http://127.0.0.1:{}",
            std::env::var("ORDER_PORT").unwrap_or("8080".into())
        )
    })
}

/// Both services' metrics, every pipeline process's CPU, both databases'
/// counters: what a run's report compares before and after.
async fn snapshot() -> anyhow::Result<report::page::Snapshot> {
    let http = reqwest::Client::new();
    let order = metrics_text(&http, &order_url()).await?;
    let product = metrics_text(&http, &product_url()).await?;
    let cpu = perf::cpu::CpuSnapshot::take(&perf::cpu::pipeline_processes())?;
    let orders = database("ORDER_DATABASE_URL")?;
    let products = database("PRODUCT_DATABASE_URL")?;
    let names = [
        orders.get_dbname().unwrap_or("orders"),
        products.get_dbname().unwrap_or("products"),
    ];
    let client = service::db::connect(&orders).await?;
    let databases = perf::pgstat::snapshot(&client, &names).await?;
    Ok(report::page::Snapshot {
        order,
        product,
        cpu,
        databases,
    })
}

#[derive(clap::Args)]
struct LoadArgs {
    #[arg(long, value_enum, default_value = "orders")]
    scenario: perf::load::Scenario,
    /// Requests per second (without --ramp).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds at that rate (without --ramp).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
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

async fn load(args: LoadArgs) -> anyhow::Result<()> {
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
        vec![perf::load::Step {
            rate: args.rate,
            seconds: args.seconds,
        }]
    };
    let plan = perf::load::Plan {
        scenario: args.scenario,
        steps,
        connections: args.connections.max(1),
        order: socket_addr(&order_url())?,
        product: socket_addr(&product_url())?,
        watched: perf::cpu::pipeline_processes(),
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

/// A service's `/metrics` text; `base` is its URL.
async fn metrics_text(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let response = http.get(format!("{base}/metrics")).send().await?;
    Ok(response.text().await?)
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::NoopServer { port } = cli.command {
        return noop_server(port);
    }
    if let Command::Load(args) = cli.command {
        // One thread does all of it: no wake-ups across threads, the least
        // CPU per request taken from the pipeline being measured.
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(load(args));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Ceilings { seconds, out } => ceilings(seconds, out).await,
            Command::Relay {
                rows,
                events_per_message,
                runs,
                relays,
            } => relay(rows, &events_per_message, runs, relays).await,
            Command::Seed {
                products,
                stock,
                hot_stock,
                out,
            } => {
                let orders = service::db::connect(&database("ORDER_DATABASE_URL")?).await?;
                let product_url = product_url();
                let seed =
                    perf::seed::seed(&product_url, &orders, products, stock, hot_stock).await?;
                write_json(&out, &seed)?;
                println!(
                    "seeded {} products and a hot one ({})",
                    seed.products.len(),
                    seed.hot
                );
                Ok(())
            }
            Command::Scrape { out } => write_json(&out, &snapshot().await?),
            Command::Load(_) => Ok(()),
            Command::Drain { timeout_secs } => {
                let stores = stores().await?;
                let (drained, waited) =
                    invariants::wait_for_drain(&stores, Duration::from_secs(timeout_secs)).await?;
                println!("drained: {drained} after {:.1}s", waited.as_secs_f64());
                anyhow::ensure!(drained, "the pipeline did not drain in {timeout_secs}s");
                Ok(())
            }
            Command::Check {
                seed,
                timeout_secs,
                out,
            } => check(&seed, timeout_secs, out).await,
            Command::Report { dir } => {
                anyhow::ensure!(report::page::print(&dir)?, "the run failed a threshold");
                Ok(())
            }
            Command::VerifyAccepted { log, out } => verify_accepted(&log, out).await,
            Command::HoldConnections {
                url,
                count,
                seconds,
            } => hold_connections(&url, count, seconds).await,
            Command::DeadLetters { namespace } => {
                let databases = [
                    ("orders", database("ORDER_DATABASE_URL")?),
                    ("products", database("PRODUCT_DATABASE_URL")?),
                ];
                let counts =
                    perf::invariants::dead_letters(&env("AMQP_URL")?, &namespace, &databases)
                        .await?;
                let total: u64 = counts.iter().map(|(_, count)| count).sum();
                for (queue, count) in &counts {
                    println!("{queue}: {count}");
                }
                println!("dead letters: {total}");
                Ok(())
            }
            Command::NoopServer { .. } => Ok(()),
        }
    })
}

async fn ceilings(seconds: u64, out: Option<PathBuf>) -> anyhow::Result<()> {
    let (single, batched) =
        perf::ceilings::postgres(&database("ORDER_DATABASE_URL")?, seconds, 8).await?;
    let broker = perf::ceilings::broker(
        &env("AMQP_URL")?,
        seconds,
        1000,
        perf::ceilings::MESSAGE_BYTES,
    )
    .await?;
    let ceilings = perf::ceilings::Ceilings {
        postgres_orders_per_sec_single: single,
        postgres_orders_per_sec_batched: batched,
        broker_messages_per_sec: broker,
    };
    println!(
        "PostgreSQL, one order (3 rows) per transaction, 8 connections: {single:>9.0} orders/s"
    );
    println!(
        "PostgreSQL, 100 orders per transaction, 8 connections:         {batched:>9.0} orders/s"
    );
    println!(
        "RabbitMQ, persistent {}-byte messages, confirms, one channel: {broker:>9.0} msg/s",
        perf::ceilings::MESSAGE_BYTES
    );
    if let Some(out) = out {
        write_json(&out, &ceilings)?;
    }
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn relay(rows: usize, packing: &str, runs: usize, relays: usize) -> anyhow::Result<()> {
    let base = database("ORDER_DATABASE_URL")?;
    let amqp = env("AMQP_URL")?;
    for events_per_message in packing.split(',').map(|n| n.trim().parse::<usize>()) {
        let events_per_message =
            events_per_message.context("--events-per-message is a list of numbers")?;
        let mut relay_events = Vec::new();
        let mut relay_messages = Vec::new();
        let mut ceilings = Vec::new();
        let mut bytes = 0;
        for _ in 0..runs.max(1) {
            let figures =
                perf::relay_bench::measure(&base, &amqp, rows, events_per_message, relays).await?;
            bytes = figures.message_bytes;
            relay_events.push(figures.events_per_sec);
            relay_messages.push(figures.messages_per_sec);
            ceilings.push(perf::ceilings::broker(&amqp, 3, 1000, bytes).await?);
        }
        let (events, messages, ceiling) = (
            median(relay_events),
            median(relay_messages),
            median(ceilings),
        );
        println!(
            "{relays} relay(s), {rows} rows, {events_per_message} events/message: {events:>8.0} events/s, {messages:>8.0} msg/s; \
             broker ceiling ({bytes}-byte messages) {ceiling:>8.0} msg/s; events/s = {:.0}% of the ceiling (median of {runs})",
            100.0 * events / ceiling
        );
    }
    Ok(())
}

async fn check(seed: &Path, timeout_secs: u64, out: Option<PathBuf>) -> anyhow::Result<()> {
    let seed: Seed = serde_json::from_value(read_json(seed)?)?;
    let mut stores = stores().await?;
    let (drained, waited) =
        invariants::wait_for_drain(&stores, Duration::from_secs(timeout_secs)).await?;
    let report = invariants::check(&mut stores, &seed.initial).await?;
    let result = json!({
        "drained": drained,
        "drain_seconds": waited.as_secs_f64(),
        "holds": report.holds() && drained,
        "orders": report.orders, "pending": report.pending, "confirmed": report.confirmed, "rejected": report.rejected,
        "products": report.products,
        "violations": report.violations,
    });
    println!(
        "invariants {}: {} orders ({} CONFIRMED, {} REJECTED, {} PENDING) over {} products; drained in {:.1}s",
        if report.holds() && drained {
            "hold"
        } else {
            "BROKEN"
        },
        report.orders,
        report.confirmed,
        report.rejected,
        report.pending,
        report.products,
        waited.as_secs_f64()
    );
    for violation in &report.violations {
        println!("  {violation}");
    }
    if let Some(out) = out {
        write_json(&out, &result)?;
    }
    anyhow::ensure!(report.holds() && drained, "invariants broken");
    Ok(())
}

async fn hold_connections(url: &str, count: usize, seconds: u64) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let http = reqwest::Client::new();
    let rss = |text: &str| {
        report::value(text, "process_resident_memory_bytes", "").unwrap_or(0.0) / 1_048_576.0
    };
    let before = metrics_text(&http, url).await?;
    let addr = url.trim_start_matches("http://").to_owned();
    let mut held = Vec::with_capacity(count);
    for n in 0..count {
        match tokio::net::TcpStream::connect(&addr).await {
            Ok(mut stream) => {
                if n % 2 == 1 {
                    // Slowloris: a request head that never ends.
                    stream
                        .write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
                        .await?;
                }
                held.push(stream);
            }
            Err(error) => {
                println!("connection {n} failed: {error}");
                break;
            }
        }
    }
    println!(
        "holding {} connections ({} idle, {} sending a head slowly)",
        held.len(),
        held.len().div_ceil(2),
        held.len() / 2
    );
    let started = std::time::Instant::now();
    let mut latencies = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        for stream in held.iter_mut().skip(1).step_by(2).take(200) {
            let _ = stream.write_all(b"a").await;
        }
        let asked = std::time::Instant::now();
        let status = http.get(format!("{url}/healthz")).send().await?.status();
        anyhow::ensure!(
            status.is_success(),
            "healthz answered {status} while connections were held"
        );
        latencies.push(asked.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let during = metrics_text(&http, url).await?;
    drop(held);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = metrics_text(&http, url).await?;
    latencies.sort_by(f64::total_cmp);
    println!(
        "a request meanwhile: median {:.2} ms, worst {:.2} ms over {} requests",
        latencies[latencies.len() / 2],
        latencies.last().copied().unwrap_or(0.0),
        latencies.len()
    );
    println!(
        "service RSS: {:.0} MB before, {:.0} MB while holding, {:.0} MB after",
        rss(&before),
        rss(&during),
        rss(&after)
    );
    Ok(())
}

async fn verify_accepted(log: &Path, out: Option<PathBuf>) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    let ids: Vec<uuid::Uuid> = text
        .lines()
        .filter_map(|line| line.split("/orders/").nth(1))
        .filter_map(|rest| rest.get(..36))
        .filter_map(|id| uuid::Uuid::parse_str(id).ok())
        .collect();
    let orders = service::db::connect(&database("ORDER_DATABASE_URL")?).await?;
    let rows = orders
        .query("SELECT id, status FROM orders WHERE id = ANY($1)", &[&ids])
        .await?;
    let found: std::collections::HashMap<uuid::Uuid, String> =
        rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    let missing = ids.iter().filter(|id| !found.contains_key(id)).count();
    let undecided = found.values().filter(|status| *status == "PENDING").count();
    println!(
        "accepted orders: {}; missing from the database: {missing}; still PENDING: {undecided}",
        ids.len()
    );
    if let Some(out) = out {
        write_json(
            &out,
            &json!({"accepted": ids.len(), "missing": missing, "pending": undecided}),
        )?;
    }
    anyhow::ensure!(
        missing == 0 && undecided == 0,
        "acknowledged orders were lost or left undecided"
    );
    Ok(())
}

fn noop_server(port: u16) -> anyhow::Result<()> {
    let metrics = service::metrics::Metrics::new();
    let http = service::metrics::HttpMetrics::register(metrics.registry())?;
    let service = Arc::new(|_request: service::http::Request| {
        service::http::Response::with_body(200, "text/plain", "ok").with_route("/")
    });
    let server = service::http::Server::bind(
        ("127.0.0.1", port),
        service,
        http,
        service::http::ServerOptions::default(),
    )?;
    println!("no-op HTTP server on {}", server.local_addr());
    loop {
        std::thread::park();
    }
}
