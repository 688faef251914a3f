//! What this machine can do without the pipeline, to read its figures
//! against: PostgreSQL's and RabbitMQ's ceilings, the relay beside the
//! broker's, and an HTTP no-op server on the services' own core; and
//! where its time went each second of a run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use crate::environment::{admin_database, env, write_json};

pub(crate) async fn ceilings(seconds: u64, out: Option<PathBuf>) -> anyhow::Result<()> {
    let (single, batched) = perf::ceilings::postgres(&admin_database()?, seconds, 8).await?;
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

pub(crate) async fn relay(
    rows: usize,
    packing: &str,
    runs: usize,
    relays: usize,
) -> anyhow::Result<()> {
    let base = admin_database()?;
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

pub(crate) fn noop_server(port: u16) -> anyhow::Result<()> {
    let metrics = platform::metrics::Metrics::new();
    let http = http_api::metrics::HttpMetrics::register(metrics.registry())?;
    let service = Arc::new(|_request: http_api::Request| {
        http_api::Response::with_body(200, "text/plain", "ok").with_route("/")
    });
    let server = http_api::Server::bind(
        ("127.0.0.1", port),
        service,
        http,
        http_api::ServerOptions::default(),
    )?;
    println!("no-op HTTP server on {}", server.local_addr());
    loop {
        std::thread::park();
    }
}

/// One line of JSON a second to `out` until the process is stopped (a
/// soak kills it when its load ends), each written whole and flushed.
pub(crate) fn sample_machine(out: &Path) -> anyhow::Result<()> {
    let mut file =
        std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut sampler = perf::machine_sample::MachineSampler::new(
        &perf::cpu::pipeline_processes(),
        &["order", "product"],
    )?;
    let start = std::time::Instant::now();
    for n in 1.. {
        // Each reading at a whole second from the start, however long the
        // last one took.
        let due = start + std::time::Duration::from_secs(n);
        std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        let mut line = serde_json::to_vec(&sampler.read_second()?)?;
        line.push(b'\n');
        file.write_all(&line)?;
    }
    Ok(())
}
