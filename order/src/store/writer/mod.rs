//! The group-commit writer: places many orders in one transaction and
//! gives every request a definite answer.
//!
//! Handlers put a [`PlaceJob`] on a bounded queue (full: 503 at once) and
//! park on its reply. A writer task takes whatever is queued (up to
//! `max_batch`; committing at most once per `linger`, so that under load
//! jobs gather while it waits), prices the orders from
//! the product replica, then inserts orders, items and their
//! `order.created` outbox rows in ONE statement (data-modifying `WITH`,
//! one array per column), which is its own transaction: two round trips
//! to PostgreSQL per batch, whatever its size. Only after it committed
//! does the writer answer every waiter. While one batch commits, requests
//! queue up for the next: batches grow with load.
//!
//! # Definite answers
//! A job's [`Ticket`] is claimed once: by the writer when it takes the job
//! into a batch, or by its waiter when it gives up at its deadline. A job
//! its waiter gave up on is never written, so that 503 is true. A job the
//! writer took is answered with the writer's own outcome, at most
//! [`ANSWER_GRACE`] after its deadline: the writer cancels a statement
//! still running by then and reads the server's answer (committed, or
//! not). Where no answer comes (the connection died while the commit was
//! in flight), it ends the server process that ran the statement and looks
//! the orders up on a fresh connection; only if that fails too is the
//! answer "outcome unknown", with the order's id for `GET /orders/:id`.
//!
//! # Layout
//! - this module: jobs, tickets, outcomes, the queue, the metrics;
//! - [`plan`]: pricing a batch from the replica, laying it out as columns;
//! - `worker`: the loop that takes batches and writes them;
//! - `outcome`: what each job is answered once its statement's fate is
//!   known;
//! - `session`: the writer's own connection, its two statements, and
//!   settling a batch whose outcome the connection did not tell.

mod outcome;
pub mod plan;
mod session;
mod worker;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use http_api::bridge::{Answer, BridgeError, Reply, reply_channel};
use platform::shutdown::Signal;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::domain::{NewOrder, Order, Owner};

pub use plan::{BatchColumns, BatchPlan, Priced, Prices, Request, plan_batch};

/// How long after its deadline a job the writer took is answered at the
/// latest. The writer cancels a statement still running halfway through
/// it, and settles an unknown outcome in the rest.
pub const ANSWER_GRACE: Duration = Duration::from_secs(1);

/// A request to place one order, with where to send the answer.
pub struct PlaceJob {
    /// The order's id if it is placed (made here, so that an answer of
    /// "outcome unknown" can name it).
    pub id: Uuid,
    pub order: NewOrder,
    pub idempotency_key: Option<String>,
    /// Whose order it will be; the key is this owner's own.
    pub owner: Owner,
    reply: Reply<PlaceResult>,
    ticket: Ticket,
    /// When its waiter gives up on a job still queued.
    pub deadline: Instant,
}

impl PlaceJob {
    /// The job as the plan and the columns read it.
    pub fn request(&self) -> Request<'_> {
        Request {
            id: self.id,
            order: &self.order,
            key: self.idempotency_key.as_deref(),
            owner: &self.owner,
        }
    }

    /// A job and the waiting for its answer, which gives up on it after
    /// `timeout` if the writer has not taken it by then.
    pub fn new(
        order: NewOrder,
        idempotency_key: Option<String>,
        owner: Owner,
        timeout: Duration,
    ) -> (Self, Waiting) {
        let id = Uuid::now_v7();
        let (reply, answer) = reply_channel();
        let ticket = Ticket::default();
        let job = PlaceJob {
            id,
            order,
            idempotency_key,
            owner,
            reply,
            ticket: ticket.clone(),
            deadline: Instant::now() + timeout,
        };
        let waiting = Waiting {
            id,
            answer,
            ticket,
            timeout,
        };
        (job, waiting)
    }
}

/// The waiter's side of a job.
pub struct Waiting {
    id: Uuid,
    answer: Answer<PlaceResult>,
    ticket: Ticket,
    timeout: Duration,
}

impl Waiting {
    /// Parks until the writer answers. At the deadline a job still queued
    /// is given up (never written: a true 503); a job the writer took is
    /// waited for, since the writer answers within [`ANSWER_GRACE`].
    pub fn outcome(mut self) -> PlaceResult {
        let unknown = Err(PlaceError::OutcomeUnknown(self.id));
        match self.answer.wait(self.timeout) {
            Ok(outcome) => outcome,
            Err(BridgeError::TimedOut) if self.ticket.abandon() => Err(PlaceError::Unavailable(
                "the order was not taken for writing within the request timeout".into(),
            )),
            // A little past the writer's own bound: its answer is on its way.
            Err(BridgeError::TimedOut) => self
                .answer
                .wait(ANSWER_GRACE + Duration::from_millis(250))
                .unwrap_or(unknown),
            // The writer dropped the job without answering: unwritten if it
            // was never taken (the queue closed), unknown otherwise.
            Err(_) if self.ticket.abandon() => Err(PlaceError::Unavailable(
                "the order writer stopped before taking the order".into(),
            )),
            Err(_) => unknown,
        }
    }
}

/// Who decides a queued job's fate first: the writer taking it into a
/// batch, or its waiter (or the writer, for an expired job) giving it up.
/// Exactly one of them wins.
#[derive(Clone, Default)]
struct Ticket(Arc<AtomicU8>);

const QUEUED: u8 = 0;
const TAKEN: u8 = 1;
const ABANDONED: u8 = 2;

impl Ticket {
    /// The writer takes the job; false if it was given up first.
    fn take(&self) -> bool {
        self.claim(TAKEN)
    }

    /// The job will never be written; false if the writer took it first.
    fn abandon(&self) -> bool {
        self.claim(ABANDONED)
    }

    fn claim(&self, state: u8) -> bool {
        self.0
            .compare_exchange(QUEUED, state, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// What placing an order came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placed {
    /// Committed now.
    Created(Order),
    /// The Idempotency-Key was used before with the same request.
    Existing(Order),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
    #[error("product {0} does not exist")]
    UnknownProduct(i64),
    /// The replica has never heard of these products.
    #[error("products {0:?} are not in the replica")]
    ReplicaMiss(Vec<i64>),
    #[error("the Idempotency-Key was used with another request")]
    KeyReused,
    /// Nothing was written.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The order may or may not have been written: the connection died
    /// while its commit was in flight and the lookup failed too.
    #[error("the outcome of order {0} is unknown")]
    OutcomeUnknown(Uuid),
    #[error("{0}")]
    Internal(String),
}

impl PlaceError {
    /// The label of `order_writer_jobs_total` for this outcome.
    fn label(&self) -> &'static str {
        match self {
            PlaceError::ReplicaMiss(_) => "replica_miss",
            PlaceError::UnknownProduct(_) => "unknown_product",
            PlaceError::KeyReused => "key_reused",
            PlaceError::OutcomeUnknown(_) => "outcome_unknown",
            PlaceError::Unavailable(_) | PlaceError::Internal(_) => "failed",
        }
    }
}

pub type PlaceResult = Result<Placed, PlaceError>;

/// Why a job could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitError {
    Full,
    Closed,
}

/// Where handlers submit jobs.
#[derive(Clone)]
pub struct WriterHandle {
    sender: mpsc::Sender<PlaceJob>,
}

impl WriterHandle {
    /// Queues a job without waiting (callable from a coroutine).
    pub fn try_submit(&self, job: PlaceJob) -> Result<(), SubmitError> {
        self.sender.try_send(job).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => SubmitError::Full,
            mpsc::error::TrySendError::Closed(_) => SubmitError::Closed,
        })
    }
}

/// The registry's handle on the shared [`QueueGauge`].
struct SharedQueueGauge(Arc<QueueGauge>);

impl Collector for SharedQueueGauge {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect()
    }
}

/// `order_writer_queued`, read from the queue itself at each scrape
/// (nothing on the hot path).
struct QueueGauge {
    queued: IntGauge,
    queue: OnceLock<mpsc::WeakSender<PlaceJob>>,
}

impl Collector for QueueGauge {
    fn desc(&self) -> Vec<&Desc> {
        self.queued.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let queued = self
            .queue
            .get()
            .and_then(mpsc::WeakSender::upgrade)
            .map_or(0, |queue| queue.max_capacity() - queue.capacity());
        self.queued.set(queued as i64);
        self.queued.collect()
    }
}

/// Sizes and timing of the writer.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Writer tasks; each commits its own batches on its own connection.
    pub writers: usize,
    pub max_batch: usize,
    /// A writer commits at most once per this long (from the start of its
    /// previous commit), gathering the jobs that come meanwhile; 0 takes
    /// only what is already queued.
    pub linger: Duration,
    /// Jobs queued at most before requests get 503.
    pub capacity: usize,
    /// The server stops any one statement of the writer after this long
    /// (`statement_timeout` on its connections), even if the writer itself
    /// could not ask it to.
    pub statement_timeout: Duration,
}

/// Batch sizes, outcomes and the queue, for `/metrics`.
#[derive(Clone)]
pub struct WriterMetrics {
    pub batch_orders: Histogram,
    pub outcomes: IntCounterVec,
    /// Orders waiting for a writer.
    queued: Arc<QueueGauge>,
    /// Orders queued at most (`ORDER_QUEUE_CAPACITY`).
    capacity: IntGauge,
}

impl WriterMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = WriterMetrics {
            batch_orders: Histogram::with_opts(
                HistogramOpts::new(
                    "order_writer_batch_orders",
                    "Orders per group-commit transaction",
                )
                .buckets(vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0]),
            )?,
            outcomes: IntCounterVec::new(
                Opts::new(
                    "order_writer_jobs_total",
                    "Order requests by writer outcome",
                ),
                &["outcome"],
            )?,
            queued: Arc::new(QueueGauge {
                queued: IntGauge::new(
                    "order_writer_queued",
                    "Orders waiting for the group-commit writer",
                )?,
                queue: OnceLock::new(),
            }),
            capacity: IntGauge::new(
                "order_writer_queue_capacity",
                "Orders queued at most before POST /orders answers 503 (ORDER_QUEUE_CAPACITY)",
            )?,
        };
        registry.register(Box::new(metrics.batch_orders.clone()))?;
        registry.register(Box::new(metrics.outcomes.clone()))?;
        registry.register(Box::new(SharedQueueGauge(metrics.queued.clone())))?;
        registry.register(Box::new(metrics.capacity.clone()))?;
        Ok(metrics)
    }

    fn count(&self, outcome: &PlaceResult) {
        let label = match outcome {
            Ok(Placed::Created(_)) => "created",
            Ok(Placed::Existing(_)) => "existing",
            Err(error) => error.label(),
        };
        self.outcomes.with_label_values(&[label]).inc();
    }
}

/// Starts the writer tasks, each with its own connection to `database`;
/// `pool` serves the reads that answer a reused Idempotency-Key. They stop
/// when `shutdown` fires and the queue is empty.
pub fn start(
    database: &tokio_postgres::Config,
    pool: deadpool_postgres::Pool,
    config: WriterConfig,
    metrics: WriterMetrics,
    shutdown: Signal,
) -> (WriterHandle, Vec<JoinHandle<()>>) {
    let (sender, receiver) = mpsc::channel(config.capacity);
    metrics.capacity.set(config.capacity as i64);
    // A writer's metrics watch one queue: the first started.
    let _ = metrics.queued.queue.set(sender.downgrade());
    let receiver = Arc::new(Mutex::new(receiver));
    let session = session::settings(database, config.statement_timeout);
    let tasks = (0..config.writers)
        .map(|_| {
            let writer = worker::Writer::new(
                session.clone(),
                pool.clone(),
                config.clone(),
                metrics.clone(),
            );
            tokio::spawn(writer.run(receiver.clone(), shutdown.clone()))
        })
        .collect();
    (WriterHandle { sender }, tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_goes_to_whoever_claims_it_first() {
        let taken = Ticket::default();
        assert!(taken.take());
        assert!(!taken.abandon(), "a taken job was given up");
        let abandoned = Ticket::default();
        assert!(abandoned.abandon());
        assert!(!abandoned.take(), "a given-up job was taken");
    }

    #[test]
    fn a_job_the_writer_never_takes_is_given_up_at_its_deadline() {
        let order = NewOrder::parse(br#"{"product_id": 1, "quantity": 1}"#).unwrap();
        let (job, waiting) =
            PlaceJob::new(order, None, Owner::for_tests(), Duration::from_millis(20));
        let outcome = waiting.outcome();
        assert!(
            matches!(outcome, Err(PlaceError::Unavailable(_))),
            "{outcome:?}"
        );
        assert!(!job.ticket.take(), "the writer could still take it");
    }

    #[test]
    fn a_job_the_writer_took_waits_for_its_answer_past_the_deadline() {
        let order = NewOrder::parse(br#"{"product_id": 1, "quantity": 1}"#).unwrap();
        let (job, waiting) =
            PlaceJob::new(order, None, Owner::for_tests(), Duration::from_millis(20));
        assert!(job.ticket.take());
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            job.reply.send(Err(PlaceError::KeyReused));
        });
        assert_eq!(waiting.outcome(), Err(PlaceError::KeyReused));
        writer.join().unwrap();
    }

    #[test]
    fn a_taken_job_dropped_unanswered_is_unknown_not_unwritten() {
        let order = NewOrder::parse(br#"{"product_id": 1, "quantity": 1}"#).unwrap();
        let (job, waiting) = PlaceJob::new(order, None, Owner::for_tests(), Duration::from_secs(5));
        let id = job.id;
        assert!(job.ticket.take());
        drop(job);
        assert_eq!(waiting.outcome(), Err(PlaceError::OutcomeUnknown(id)));
    }
}
