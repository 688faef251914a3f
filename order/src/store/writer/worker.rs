//! One writer task: takes a batch off the queue, writes it, answers every
//! job of it.

use std::sync::Arc;
use std::time::Instant;

use deadpool_postgres::Pool;
use platform::shutdown::Signal;
use time::OffsetDateTime;
use tokio::sync::{Mutex, mpsc};
use tokio::time::timeout_at;
use tokio_postgres::Config;
use uuid::Uuid;

use super::plan::{BatchColumns, Priced, plan_batch};
use super::session::{Backend, Doubt, Placement, Session, Written, settle};
use super::{ANSWER_GRACE, PlaceError, PlaceJob, PlaceResult, Placed, WriterConfig, WriterMetrics};
use crate::domain::{Order, OrderStatus};
use crate::store::{OrderStore, StoreError, StoreResult};

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
    /// When the previous commit started.
    last_commit: Option<tokio::time::Instant>,
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
            last_commit: None,
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
            self.last_commit = Some(tokio::time::Instant::now());
            self.commit(batch).await;
        }
    }

    /// The next batch; empty once shutdown fired and nothing is queued.
    ///
    /// The writer commits at most once per `linger`, counted from the start
    /// of its previous commit: a job that comes after the writer sat idle
    /// that long is written at once; under load, jobs gather until then.
    /// Each job waits at most `linger` for its batch (half that on average),
    /// and at a few hundred orders a second the fixed cost of a commit is
    /// shared by several orders instead of paid by each.
    async fn collect(
        &self,
        receiver: &mut mpsc::Receiver<PlaceJob>,
        shutdown: &Signal,
    ) -> Vec<PlaceJob> {
        let first = tokio::select! {
            job = receiver.recv() => job,
            _ = shutdown.cancelled() => receiver.try_recv().ok(),
        };
        let Some(first) = first else {
            return Vec::new();
        };
        let mut batch = vec![first];
        self.take_queued(receiver, &mut batch);
        let room = batch.len() < self.config.max_batch;
        let due = self
            .last_commit
            .map(|started| started + self.config.linger)
            .filter(|due| room && *due > tokio::time::Instant::now() && !shutdown.is_cancelled());
        if let Some(due) = due {
            tokio::time::sleep_until(due).await;
            self.take_queued(receiver, &mut batch);
        }
        batch
    }

    /// Adds what is queued now to `batch`, up to `max_batch`. While the
    /// writer lingers it sleeps instead of waiting on the queue, so that a
    /// request joining a batch does not wake it (a wake-up, a context
    /// switch between the HTTP and tokio threads, for every order).
    fn take_queued(&self, receiver: &mut mpsc::Receiver<PlaceJob>, batch: &mut Vec<PlaceJob>) {
        while batch.len() < self.config.max_batch {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
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
        let requests = || {
            jobs.iter()
                .map(|job| (job.id, &job.order, job.idempotency_key.as_deref()))
        };
        let columns = BatchColumns::of(requests())?;
        let session = self.session(clock.cancel_at).await?;
        let backend = session.backend().clone();
        let cause = match session.place(&columns, clock.cancel_at).await {
            Written::Committed(placement) => {
                let answers = self.answer(jobs, placement, clock).await;
                return Ok(answers);
            }
            Written::Unreplicated(placement, warning) => {
                let answers = self.answer(jobs, placement, clock).await;
                return Ok(self.confirm(answers, &backend, &warning, clock).await);
            }
            Written::Refused(error) => {
                if error.is_transient() {
                    self.session = None;
                }
                return Err(error);
            }
            Written::Unknown(cause) => cause,
        };
        self.session = None;
        Ok(self.settle(jobs, &backend, &cause, clock).await)
    }

    /// The answers of a batch whose statement committed: each order
    /// priced from the replica's view the statement returned, as the
    /// statement itself priced it.
    async fn answer(
        &self,
        jobs: &[PlaceJob],
        placement: Placement,
        clock: BatchClock,
    ) -> Vec<PlaceResult> {
        if !placement.inserted.is_empty() {
            // Their order.created rows are committed: this process's relay
            // need not wait for its poll.
            outbox::relay::rows_committed();
        }
        let plan = plan_batch(
            jobs.iter()
                .map(|job| (job.id, &job.order, job.idempotency_key.as_deref())),
            &placement.prices,
        );
        let mut outcomes: Vec<Option<PlaceResult>> = jobs.iter().map(|_| None).collect();
        for (job, error) in plan.answered {
            outcomes[job] = Some(Err(error));
        }
        let mut by_key = plan.by_key;
        for order in plan.priced {
            match placement.inserted.get(&order.id) {
                Some(created_at) => {
                    let job = order.job;
                    outcomes[job] = Some(Ok(Placed::Created(created(order, *created_at))));
                }
                // Not inserted by a statement that committed: its key's
                // order was there first.
                None => by_key.push(order.job),
            }
        }
        // Committed: from here on nothing may fail the batch as a whole, or
        // its orders would be answered as not placed.
        for job in by_key {
            let answer = timeout_at(clock.answer_by, answer_from_key(&self.store, &jobs[job]))
                .await
                .unwrap_or_else(|_| Err(StoreError::database_unavailable("no answer in time")));
            outcomes[job] = Some(answer.unwrap_or_else(|error| Err(error.into())));
        }
        outcomes
            .into_iter()
            .map(|outcome| {
                outcome.unwrap_or(Err(PlaceError::Internal("order left unanswered".into())))
            })
            .collect()
    }

    /// The answers of a batch whose connection died under its statement:
    /// the server process that ran it is ended, then its orders looked up
    /// on the server that takes writes now. An order found was placed; one
    /// not found on the server that ran the statement was not (a retry,
    /// with its key if it has one, places it or finds its key's order).
    /// One not found after a failover, or a lookup that fails, leaves the
    /// outcome unknown.
    async fn settle(
        &self,
        jobs: &[PlaceJob],
        backend: &Backend,
        cause: &str,
        clock: BatchClock,
    ) -> Vec<PlaceResult> {
        let ids: Vec<Uuid> = jobs.iter().map(|job| job.id).collect();
        let settled = settle(
            &self.database,
            backend,
            Doubt::LostConnection,
            &ids,
            clock.answer_by,
        )
        .await;
        match settled {
            Ok(settled) => {
                tracing::warn!(%cause, orders = ids.len(), committed = settled.found.len(), same_server = settled.same_server, "order batch outcome settled by a lookup");
                jobs.iter()
                    .map(
                        |job| match settled.found.iter().find(|order| order.id == job.id) {
                            Some(order) => Ok(Placed::Created(order.clone())),
                            None if settled.same_server => Err(PlaceError::Unavailable(
                                "not written: its connection died before the commit; retry".into(),
                            )),
                            None => Err(PlaceError::OutcomeUnknown(job.id)),
                        },
                    )
                    .collect()
            }
            Err(error) => {
                tracing::error!(%cause, %error, orders = ids.len(), "order batch outcome unknown");
                jobs.iter()
                    .map(|job| Err(PlaceError::OutcomeUnknown(job.id)))
                    .collect()
            }
        }
    }

    /// The answers of a batch that committed while its wait for a standby
    /// was cancelled: an order created stays so only if the server that
    /// takes writes now holds it durably; otherwise its outcome is unknown
    /// (it may be lost with the old primary).
    async fn confirm(
        &self,
        answers: Vec<PlaceResult>,
        backend: &Backend,
        warning: &str,
        clock: BatchClock,
    ) -> Vec<PlaceResult> {
        let created: Vec<Uuid> = answers
            .iter()
            .filter_map(|answer| match answer {
                Ok(Placed::Created(order)) => Some(order.id),
                _ => None,
            })
            .collect();
        let settled = settle(
            &self.database,
            backend,
            Doubt::Unreplicated,
            &created,
            clock.answer_by,
        )
        .await;
        let found: Vec<Uuid> = match &settled {
            Ok(settled) => settled.found.iter().map(|order| order.id).collect(),
            Err(_) => Vec::new(),
        };
        match &settled {
            Ok(_) => {
                tracing::warn!(%warning, orders = created.len(), confirmed = found.len(), "order batch committed without a standby's answer: looked up")
            }
            Err(error) => {
                tracing::error!(%warning, %error, orders = created.len(), "order batch committed without a standby's answer: outcome unknown")
            }
        }
        answers
            .into_iter()
            .map(|answer| match answer {
                Ok(Placed::Created(order)) if !found.contains(&order.id) => {
                    Err(PlaceError::OutcomeUnknown(order.id))
                }
                other => other,
            })
            .collect()
    }

    /// The writer's session, opened if it has none or its connection died.
    async fn session(&mut self, by: tokio::time::Instant) -> StoreResult<&Session> {
        if self.session.as_ref().is_none_or(Session::is_closed) {
            self.session = None;
            let opened = timeout_at(by, Session::open(&self.database))
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::database_unavailable("no connection in time"))
                })?;
            self.session = Some(opened);
        }
        self.session
            .as_ref()
            .ok_or_else(|| StoreError::database_unavailable("no session"))
    }
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::NewOrder;

    fn writer(linger: Duration, max_batch: usize) -> Writer {
        let database: Config = "postgres://nobody@127.0.0.1:1/none".parse().unwrap();
        let pool = platform::db::pool(&database, 1).unwrap();
        let config = WriterConfig {
            writers: 1,
            max_batch,
            linger,
            capacity: 64,
            statement_timeout: Duration::from_secs(1),
        };
        let metrics = WriterMetrics::register(&prometheus::Registry::new()).unwrap();
        Writer::new(database, pool, config, metrics)
    }

    fn job() -> PlaceJob {
        let order = NewOrder::parse(br#"{"product_id": 1, "quantity": 1}"#).unwrap();
        PlaceJob::new(order, None, Duration::from_secs(5)).0
    }

    #[tokio::test]
    async fn jobs_that_come_while_the_writer_lingers_join_the_batch_taken_at_its_end() {
        let mut writer = writer(Duration::from_millis(150), 256);
        let (sender, mut receiver) = mpsc::channel(64);
        sender.try_send(job()).unwrap();
        let started = tokio::time::Instant::now();
        writer.last_commit = Some(started);
        let later = sender.clone();
        tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                later.try_send(job()).unwrap();
            }
        });
        let batch = writer.collect(&mut receiver, &Signal::new()).await;
        assert_eq!(
            batch.len(),
            4,
            "a job that came during the linger was left out"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "taken before the linger ended"
        );
    }

    #[tokio::test]
    async fn a_writer_idle_for_longer_than_its_linger_takes_what_is_queued_at_once() {
        let mut writer = writer(Duration::from_millis(500), 2);
        let (sender, mut receiver) = mpsc::channel(64);
        for _ in 0..3 {
            sender.try_send(job()).unwrap();
        }
        writer.last_commit = Some(tokio::time::Instant::now() - Duration::from_secs(1));
        let started = tokio::time::Instant::now();
        let batch = writer.collect(&mut receiver, &Signal::new()).await;
        assert_eq!(
            batch.len(),
            2,
            "more than max_batch, or less than was queued"
        );
        assert!(
            started.elapsed() < Duration::from_millis(250),
            "it lingered"
        );
    }
}
