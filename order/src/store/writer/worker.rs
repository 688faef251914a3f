//! One writer task: takes a batch off the queue, writes it, answers every
//! job of it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use deadpool_postgres::Pool;
use service::shutdown::Signal;
use time::OffsetDateTime;
use tokio::sync::{Mutex, mpsc};
use tokio::time::timeout_at;
use tokio_postgres::Config;
use uuid::Uuid;

use super::plan::{Priced, plan_batch};
use super::session::{Session, Written, settle};
use super::{ANSWER_GRACE, PlaceError, PlaceJob, PlaceResult, Placed, WriterConfig, WriterMetrics};
use crate::domain::{Order, OrderStatus};
use crate::store::{OrderStore, StoreError, StoreResult};

/// Pooled-connection failures a price read survives by reconnecting: the
/// server cut the connection (a restart, `pg_terminate_backend`) while it
/// sat idle. The read writes nothing, so trying again is safe.
const RECONNECTS_PER_READ: usize = 3;

/// The times a batch works to, from its earliest job's deadline: a
/// statement still running at `cancel_at` is cancelled, and everything,
/// settling an unknown outcome included, ends by `answer_by`, within
/// [`ANSWER_GRACE`] of that deadline.
#[derive(Debug, Clone, Copy)]
struct BatchClock {
    cancel_at: tokio::time::Instant,
    answer_by: tokio::time::Instant,
}

impl BatchClock {
    fn of(jobs: &[PlaceJob]) -> Option<Self> {
        let earliest = tokio::time::Instant::from_std(jobs.iter().map(|job| job.deadline).min()?);
        Some(BatchClock {
            cancel_at: earliest + ANSWER_GRACE / 2,
            answer_by: earliest + ANSWER_GRACE * 9 / 10,
        })
    }
}

pub(super) struct Writer {
    /// Settings of the writer's own connections.
    database: Config,
    session: Option<Session>,
    /// For the reads that answer a reused Idempotency-Key.
    store: OrderStore,
    config: WriterConfig,
    metrics: WriterMetrics,
}

impl Writer {
    pub(super) fn new(
        database: Config,
        pool: Pool,
        config: WriterConfig,
        metrics: WriterMetrics,
    ) -> Self {
        Writer {
            database,
            session: None,
            store: OrderStore::new(pool),
            config,
            metrics,
        }
    }

    pub(super) async fn run(
        mut self,
        receiver: Arc<Mutex<mpsc::Receiver<PlaceJob>>>,
        shutdown: Signal,
    ) {
        loop {
            let batch = {
                let mut receiver = receiver.lock().await;
                self.collect(&mut receiver, &shutdown).await
            };
            if batch.is_empty() {
                return;
            }
            self.commit(batch).await;
        }
    }

    /// The next batch; empty once shutdown fired and nothing is queued.
    async fn collect(
        &self,
        receiver: &mut mpsc::Receiver<PlaceJob>,
        shutdown: &Signal,
    ) -> Vec<PlaceJob> {
        let first = tokio::select! {
            job = receiver.recv() => job,
            _ = shutdown.wait() => receiver.try_recv().ok(),
        };
        let Some(first) = first else {
            return Vec::new();
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + self.config.linger;
        while batch.len() < self.config.max_batch {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) if self.config.linger.is_zero() => break,
                Err(_) => match tokio::time::timeout_at(deadline, receiver.recv()).await {
                    Ok(Some(job)) => batch.push(job),
                    _ => break,
                },
            }
        }
        batch
    }

    /// Takes the jobs whose waiters still wait, writes them and answers
    /// each. An expired job is given up unwritten.
    async fn commit(&mut self, jobs: Vec<PlaceJob>) {
        let now = Instant::now();
        let mut taken = Vec::with_capacity(jobs.len());
        let expired = &self.metrics.outcomes.with_label_values(&["expired"]);
        for job in jobs {
            if job.deadline <= now {
                if job.ticket.abandon() {
                    job.reply.send(Err(PlaceError::Unavailable(
                        "the request timed out before its turn to commit".into(),
                    )));
                }
                expired.inc();
            } else if job.ticket.take() {
                taken.push(job);
            } else {
                // Its waiter gave up first and answered 503 itself.
                expired.inc();
            }
        }
        let Some(clock) = BatchClock::of(&taken) else {
            return;
        };
        self.metrics.batch_orders.observe(taken.len() as f64);
        let outcomes = self.place(&taken, clock).await;
        for (job, outcome) in taken.into_iter().zip(outcomes) {
            self.metrics.count(&outcome);
            job.reply.send(outcome);
        }
    }

    /// One outcome per job, in order. A batch the database refuses for its
    /// data (not for being unreachable) is retried one job at a time, so
    /// that one bad job fails alone.
    async fn place(&mut self, jobs: &[PlaceJob], clock: BatchClock) -> Vec<PlaceResult> {
        let refusal = match self.write(jobs, clock).await {
            Ok(outcomes) => return outcomes,
            Err(error) => error,
        };
        tracing::warn!(error = %refusal, orders = jobs.len(), "order batch not written");
        if refusal.is_transient() || jobs.len() == 1 {
            let failure = PlaceError::from(refusal);
            return jobs.iter().map(|_| Err(failure.clone())).collect();
        }
        let mut outcomes = Vec::with_capacity(jobs.len());
        for job in jobs {
            let one = self.write(std::slice::from_ref(job), clock).await;
            outcomes.push(match one {
                Ok(mut outcome) => outcome
                    .pop()
                    .unwrap_or_else(|| Err(PlaceError::Internal("order left unanswered".into()))),
                Err(error) => Err(error.into()),
            });
        }
        outcomes
    }

    /// Writes `jobs` in one statement. `Err` means nothing was written; an
    /// order whose outcome could not be settled is answered
    /// [`PlaceError::OutcomeUnknown`].
    async fn write(
        &mut self,
        jobs: &[PlaceJob],
        clock: BatchClock,
    ) -> StoreResult<Vec<PlaceResult>> {
        let products: Vec<i64> = {
            let mut ids: Vec<i64> = jobs
                .iter()
                .flat_map(|job| job.order.product_ids())
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        let prices = self.read_prices(&products, clock.cancel_at).await?;
        let plan = plan_batch(
            jobs.iter()
                .map(|job| (job.id, &job.order, job.idempotency_key.as_deref())),
            &prices,
        );
        let mut outcomes: Vec<Option<PlaceResult>> = jobs.iter().map(|_| None).collect();
        for (job, error) in plan.answered {
            outcomes[job] = Some(Err(error));
        }
        let mut by_key = plan.by_key;
        let inserted = self.insert(&plan.priced, clock).await?;
        for order in plan.priced {
            let job = order.job;
            match &inserted {
                Inserted::Rows { rows, .. } if rows.contains_key(&order.id) => {
                    let created_at = rows[&order.id];
                    outcomes[job] = Some(Ok(Placed::Created(created(order, created_at))));
                }
                // Not inserted by a statement that committed: its key's
                // order was there first.
                Inserted::Rows { settled: false, .. } => by_key.push(job),
                Inserted::Rows { rows, .. } if order.key.is_some() && !rows.is_empty() => {
                    by_key.push(job)
                }
                Inserted::Rows { .. } => {
                    outcomes[job] = Some(Err(PlaceError::Unavailable(
                        "not written: its connection died before the commit".into(),
                    )))
                }
                Inserted::Unknown => {
                    outcomes[job] = Some(Err(PlaceError::OutcomeUnknown(order.id)))
                }
            }
        }
        if matches!(inserted, Inserted::Unknown) {
            // Their key's order may or may not exist: a retry with the key
            // says which.
            for job in by_key.drain(..) {
                outcomes[job] = Some(Err(PlaceError::Unavailable(
                    "the order holding this key may not be written; retry with the key".into(),
                )));
            }
        }
        // Committed: from here on nothing may fail the batch as a whole, or
        // its orders would be answered as not placed.
        for job in by_key {
            let answer = timeout_at(clock.answer_by, answer_from_key(&self.store, &jobs[job]))
                .await
                .unwrap_or_else(|_| Err(StoreError::Unavailable("no answer in time".into())));
            outcomes[job] = Some(answer.unwrap_or_else(|error| Err(error.into())));
        }
        Ok(outcomes
            .into_iter()
            .map(|outcome| {
                outcome.unwrap_or(Err(PlaceError::Internal("order left unanswered".into())))
            })
            .collect())
    }

    /// The writer's session, opened if it has none or its connection died.
    async fn session(&mut self, by: tokio::time::Instant) -> StoreResult<&Session> {
        if self.session.as_ref().is_none_or(Session::is_closed) {
            self.session = None;
            let opened = timeout_at(by, Session::open(&self.database))
                .await
                .unwrap_or_else(|_| Err(StoreError::Unavailable("no connection in time".into())))?;
            self.session = Some(opened);
        }
        self.session
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("no session".into()))
    }

    /// The batch's prices, reconnecting when the connection turns out dead.
    async fn read_prices(
        &mut self,
        products: &[i64],
        by: tokio::time::Instant,
    ) -> StoreResult<super::Prices> {
        let mut reconnects = 0;
        loop {
            let session = self.session(by).await?;
            match timeout_at(by, session.prices(products)).await {
                Ok(Ok(prices)) => return Ok(prices),
                Ok(Err(error)) if error.is_transient() && reconnects < RECONNECTS_PER_READ => {
                    tracing::debug!(%error, "the writer's connection failed a read; reconnecting");
                    self.session = None;
                    reconnects += 1;
                }
                Ok(Err(error)) => return Err(error),
                Err(_) => {
                    // A read still in flight: this connection is of no more use.
                    self.session = None;
                    return Err(StoreError::Unavailable(
                        "the price read did not finish in time".into(),
                    ));
                }
            }
        }
    }

    /// Runs the placing statement; `Err` means nothing was written.
    async fn insert(&mut self, priced: &[Priced], clock: BatchClock) -> StoreResult<Inserted> {
        if priced.is_empty() {
            return Ok(Inserted::Rows {
                rows: HashMap::new(),
                settled: false,
            });
        }
        let Some(session) = self.session.as_ref() else {
            return Err(StoreError::Unavailable("no session".into()));
        };
        let cause = match session.place(priced, clock.cancel_at).await {
            Written::Committed(rows) => {
                return Ok(Inserted::Rows {
                    rows,
                    settled: false,
                });
            }
            Written::Refused(error) => {
                if error.is_transient() {
                    self.session = None;
                }
                return Err(error);
            }
            Written::Unknown(cause) => cause,
        };
        let backend = session.backend_pid();
        self.session = None;
        let ids: Vec<Uuid> = priced.iter().map(|order| order.id).collect();
        Ok(
            match settle(&self.database, backend, &ids, clock.answer_by).await {
                Ok(rows) => {
                    tracing::warn!(%cause, orders = ids.len(), committed = rows.len(), "order batch outcome settled by a lookup");
                    Inserted::Rows {
                        rows,
                        settled: true,
                    }
                }
                Err(error) => {
                    tracing::error!(%cause, %error, orders = ids.len(), "order batch outcome unknown");
                    Inserted::Unknown
                }
            },
        )
    }
}

/// What the placing statement came to.
enum Inserted {
    /// The orders that exist now, with their creation time: from the
    /// statement's own answer (`settled: false`; an order missing from it
    /// lost its key to an earlier order), or from a lookup after its
    /// connection died (`settled: true`; an order missing from it was not
    /// written, unless its key's order was).
    Rows {
        rows: HashMap<Uuid, OffsetDateTime>,
        settled: bool,
    },
    /// Neither the statement nor a lookup said.
    Unknown,
}

fn created(order: Priced, created_at: OffsetDateTime) -> Order {
    Order {
        id: order.id,
        status: OrderStatus::Pending,
        reason: None,
        items: order.lines,
        total: order.total,
        created_at,
        decided_at: None,
    }
}

/// A job whose key an earlier order holds: that order if the request is
/// the same, a refusal if it is not.
async fn answer_from_key(store: &OrderStore, job: &PlaceJob) -> StoreResult<PlaceResult> {
    let Some(key) = &job.idempotency_key else {
        return Ok(Err(PlaceError::Internal(
            "an order without a key conflicted".into(),
        )));
    };
    Ok(match store.get_by_key(key).await? {
        Some((order, fingerprint)) if fingerprint == job.order.fingerprint() => {
            Ok(Placed::Existing(order))
        }
        Some(_) => Err(PlaceError::KeyReused),
        None => Err(PlaceError::Unavailable(
            "the order holding this key is not visible yet; retry".into(),
        )),
    })
}

impl From<StoreError> for PlaceError {
    fn from(error: StoreError) -> Self {
        if error.is_transient() {
            PlaceError::Unavailable(error.to_string())
        } else {
            PlaceError::Internal(error.to_string())
        }
    }
}
