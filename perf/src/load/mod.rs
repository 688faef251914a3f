//! `perf load`: an open-loop load generator light enough to find the knee
//! on the machine it shares with the pipeline.
//!
//! Requests are planned at a constant arrival rate per step (one step, or
//! a ramp of steps) and each is sent at its planned time, whatever became
//! of the ones before: a slow answer does not slow the arrivals. Latency
//! is measured from the planned time, not from when a connection was free
//! to send it, so queueing anywhere (in the generator, the kernel, the
//! service) shows in the figures instead of hiding behind fewer requests
//! (coordinated omission). Latencies go into an HDR histogram per step.
//! At each step boundary the pipeline's CPU is read from /proc, so each
//! step says what an order cost at that rate.
//!
//! One thread runs it all; its own CPU per request is reported beside
//! the results (k6 spends ten times as much here).

mod client;
pub mod scenario;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use client::HttpConnection;
pub use scenario::Scenario;
use scenario::{Request, Service};

use crate::cpu;
use crate::seed::Seed;
use crate::tokens::Tokens;

/// A request not answered in this long fails, and its connection is
/// dropped (k6's scenarios use the same bound).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One step: a constant rate for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub rate: u64,
    pub seconds: u64,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenario: Scenario,
    pub steps: Vec<Step>,
    /// Connections to each service at most; a request planned while all
    /// are busy waits for one (and its wait counts in its latency).
    pub connections: usize,
    pub order: SocketAddr,
    pub product: SocketAddr,
    /// Processes whose CPU is read at each step boundary.
    pub watched: Vec<(String, u16)>,
    /// What orders and catalog writes are sent with.
    pub tokens: Tokens,
}

/// The figures of one step, or of the whole run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StepFigures {
    /// Planned rate, requests per second.
    pub target: u64,
    pub seconds: f64,
    pub sent: u64,
    /// Answered with the expected status.
    pub ok: u64,
    /// Wrong status, failed connection, or no answer in 5 s.
    pub errors: u64,
    /// Orders placed (201 to POST /orders).
    pub orders: u64,
    /// Answers received during the step, per second.
    pub achieved: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The slowest answer to the requests planned in each second of the
    /// step, in ms (empty for the whole run): when, inside a slow window,
    /// the stall was, to be read against what else ran at that second.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub worst_ms_by_second: Vec<f64>,
    /// CPU seconds of each watched process during the step.
    pub cpu: BTreeMap<String, f64>,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub generator: &'static str,
    pub scenario: Scenario,
    pub steps: Vec<StepFigures>,
    pub total: StepFigures,
    /// The generator's own CPU, and per request sent.
    pub generator_cpu_seconds: f64,
    pub generator_cpu_us_per_request: f64,
}

/// Idle connections to one service, and how many more may be opened.
struct Pool {
    addr: SocketAddr,
    idle: RefCell<Vec<HttpConnection>>,
    /// One permit per connection that may be in use at once.
    permits: Semaphore,
}

impl Pool {
    fn new(addr: SocketAddr, connections: usize) -> Rc<Self> {
        Rc::new(Pool {
            addr,
            idle: RefCell::new(Vec::new()),
            permits: Semaphore::new(connections),
        })
    }
}

/// Per-step tallies the requests fill in.
struct Tally {
    histogram: Histogram<u64>,
    ok: u64,
    errors: u64,
    orders: u64,
    /// Answers that came in during each step (by arrival, not by plan).
    answered_in: Vec<u64>,
    /// The slowest latency (µs) of the requests planned in each second.
    worst_by_second: Vec<u64>,
}

impl Tally {
    fn new(steps: usize, seconds: u64) -> anyhow::Result<Self> {
        Ok(Tally {
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            ok: 0,
            errors: 0,
            orders: 0,
            answered_in: vec![0; steps],
            worst_by_second: vec![0; seconds as usize],
        })
    }

    /// One answer's latency, for a request planned in `second` of its step.
    fn record(&mut self, second: usize, latency_us: u64) {
        self.histogram.saturating_record(latency_us.max(1));
        if let Some(worst) = self.worst_by_second.get_mut(second) {
            *worst = (*worst).max(latency_us);
        }
    }
}

/// Shared by every request of a run (one thread: `Rc`, `RefCell`).
struct Shared {
    order: Rc<Pool>,
    product: Rc<Pool>,
    tokens: Tokens,
    tallies: RefCell<Vec<Tally>>,
    current_step: RefCell<usize>,
}

/// Runs `plan` against the services and returns what it measured.
pub async fn run(plan: &Plan, seed: &Seed) -> anyhow::Result<Summary> {
    anyhow::ensure!(!seed.products.is_empty(), "the seed file has no products");
    let local = tokio::task::LocalSet::new();
    local.run_until(drive(plan, seed)).await
}

async fn drive(plan: &Plan, seed: &Seed) -> anyhow::Result<Summary> {
    let steps = plan.steps.len();
    let shared = Rc::new(Shared {
        order: Pool::new(plan.order, plan.connections),
        product: Pool::new(plan.product, plan.connections),
        tokens: plan.tokens.clone(),
        tallies: RefCell::new(
            plan.steps
                .iter()
                .map(|step| Tally::new(steps, step.seconds))
                .collect::<anyhow::Result<_>>()?,
        ),
        current_step: RefCell::new(0),
    });
    let watch = cpu::Watch::new(&plan.watched)?;
    // The generator's own CPU leaves out the reading of the others'.
    let mut own = 0.0;
    let mut own_from = cpu::own_seconds()?;
    let mut cpu_marks = vec![watch.snapshot()?];
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut sent = vec![0u64; steps];
    let mut requests = Vec::new();
    for (index, step) in plan.steps.iter().enumerate() {
        *shared.current_step.borrow_mut() = index;
        own_from = own_from.max(cpu::own_seconds()?);
        let started = Instant::now();
        let total = step.rate * step.seconds;
        let interval = 1.0 / step.rate.max(1) as f64;
        let mut next = 0u64;
        while next < total {
            let due = started + Duration::from_secs_f64(interval * next as f64);
            let now = Instant::now();
            if due > now {
                tokio::time::sleep_until(due).await;
                continue;
            }
            // Everything due by now goes out now, each at its own planned time.
            while next < total {
                let planned = started + Duration::from_secs_f64(interval * next as f64);
                if planned > now {
                    break;
                }
                let request = plan.scenario.next(seed, &mut rng);
                let second = (next / step.rate.max(1)) as usize;
                requests.push(tokio::task::spawn_local(send(
                    shared.clone(),
                    request,
                    planned,
                    (index, second),
                )));
                next += 1;
            }
            requests.retain(|request| !request.is_finished());
        }
        sent[index] = total;
        tokio::time::sleep_until(started + Duration::from_secs(step.seconds)).await;
        own += cpu::own_seconds()? - own_from;
        cpu_marks.push(watch.snapshot()?);
        own_from = cpu::own_seconds()?;
    }
    for request in requests {
        request.await?;
    }
    own += cpu::own_seconds()? - own_from;
    let tallies = shared.tallies.borrow();
    let mut figures: Vec<StepFigures> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(index, step)| {
            let answered: u64 = tallies.iter().map(|t| t.answered_in[index]).sum();
            figures_of(
                step.rate,
                step.seconds as f64,
                sent[index],
                &tallies[index],
                answered,
                cpu_marks[index + 1].since(&cpu_marks[index]),
            )
        })
        .collect();
    let total = total_of(
        &figures,
        &tallies,
        cpu_marks.last().map(|last| last.since(&cpu_marks[0])),
    )?;
    let requests: u64 = sent.iter().sum();
    for step in &mut figures {
        step.seconds = step.seconds.max(0.001);
    }
    Ok(Summary {
        generator: "perf load",
        scenario: plan.scenario,
        steps: figures,
        total,
        generator_cpu_seconds: own,
        generator_cpu_us_per_request: 1e6 * own / requests.max(1) as f64,
    })
}

/// Sends one request on an idle connection (or a new one, up to the
/// limit) and records its latency from its planned time, in the tally of
/// its step and second.
async fn send(
    shared: Rc<Shared>,
    request: Request,
    planned: Instant,
    (step, second): (usize, usize),
) {
    let pool = match request.service {
        Service::Order => shared.order.clone(),
        Service::Product => shared.product.clone(),
    };
    let ok = match pool.permits.acquire().await {
        Ok(_permit) => {
            let mut connection = pool
                .idle
                .borrow_mut()
                .pop()
                .unwrap_or_else(|| HttpConnection::new(pool.addr));
            let body = request.body.as_deref().map(str::as_bytes);
            let token = match (&request.service, request.method) {
                (Service::Order, _) => shared.tokens.order(),
                (Service::Product, "GET") => None,
                (Service::Product, _) => shared.tokens.catalog(),
            };
            let answer = tokio::time::timeout(
                REQUEST_TIMEOUT,
                connection.send(request.method, &request.path, token, body),
            )
            .await;
            if answer.is_err() {
                // Timed out mid-exchange: the connection is in an unknown state.
                connection.reset();
            }
            pool.idle.borrow_mut().push(connection);
            matches!(answer, Ok(Ok(status)) if status == request.expect)
        }
        Err(_) => false,
    };
    let latency_us = planned.elapsed().as_micros() as u64;
    let now = *shared.current_step.borrow();
    let mut tallies = shared.tallies.borrow_mut();
    let tally = &mut tallies[step];
    tally.record(second, latency_us);
    tally.answered_in[now] += 1;
    if ok {
        tally.ok += 1;
        tally.orders += u64::from(request.is_order());
    } else {
        tally.errors += 1;
    }
}

fn figures_of(
    target: u64,
    seconds: f64,
    sent: u64,
    tally: &Tally,
    answered: u64,
    cpu: BTreeMap<String, f64>,
) -> StepFigures {
    let ms = |q: f64| tally.histogram.value_at_quantile(q) as f64 / 1000.0;
    StepFigures {
        target,
        seconds,
        sent,
        ok: tally.ok,
        errors: tally.errors,
        orders: tally.orders,
        achieved: answered as f64 / seconds.max(0.001),
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p95_ms: ms(0.95),
        p99_ms: ms(0.99),
        max_ms: tally.histogram.max() as f64 / 1000.0,
        worst_ms_by_second: tally
            .worst_by_second
            .iter()
            .map(|&us| us as f64 / 1000.0)
            .collect(),
        cpu,
    }
}

fn total_of(
    steps: &[StepFigures],
    tallies: &[Tally],
    cpu: Option<BTreeMap<String, f64>>,
) -> anyhow::Result<StepFigures> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for tally in tallies {
        histogram.add(&tally.histogram)?;
    }
    let merged = Tally {
        histogram,
        ok: tallies.iter().map(|t| t.ok).sum(),
        errors: tallies.iter().map(|t| t.errors).sum(),
        orders: tallies.iter().map(|t| t.orders).sum(),
        answered_in: Vec::new(),
        worst_by_second: Vec::new(),
    };
    let seconds: f64 = steps.iter().map(|s| s.seconds).sum();
    let answered = merged.ok + merged.errors;
    Ok(figures_of(
        steps.last().map_or(0, |s| s.target),
        seconds,
        steps.iter().map(|s| s.sent).sum(),
        &merged,
        answered,
        cpu.unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_second_keeps_its_slowest_answer() {
        let mut tally = Tally::new(1, 3).unwrap();
        tally.record(0, 4_000);
        tally.record(0, 9_000);
        tally.record(0, 5_000);
        tally.record(2, 208_000);
        // A request planned past the step's last second (none are) is
        // counted in the histogram and nowhere else.
        tally.record(3, 1_000);
        let figures = figures_of(1000, 3.0, 5, &tally, 5, BTreeMap::new());
        assert_eq!(figures.worst_ms_by_second, vec![9.0, 0.0, 208.0]);
        assert_eq!(tally.histogram.len(), 5);
        assert!((figures.max_ms - 208.0).abs() < 0.5);
    }
}
