//! One writer task: takes a batch off the queue, writes it in one
//! statement, answers every job of it (what each is answered, once the
//! statement's fate is known, is [`super::outcome`]'s).

use std::sync::Arc;
use std::time::Instant;

use deadpool_postgres::Pool;
use platform::shutdown::Signal;
use tokio::sync::{Mutex, mpsc};
use tokio::time::timeout_at;
use tokio_postgres::Config;

use super::outcome;
use super::plan::BatchColumns;
use super::session::{Session, Written};
use super::{ANSWER_GRACE, PlaceError, PlaceJob, PlaceResult, WriterConfig, WriterMetrics};
use crate::store::{OrderStore, StoreError, StoreResult};

/// The times a batch works to, from its earliest job's deadline: a
/// statement still running at `cancel_at` is cancelled, and everything,
/// settling an unknown outcome included, ends by `answer_by`, within
/// [`ANSWER_GRACE`] of that deadline.
#[derive(Debug, Clone, Copy)]
pub(super) struct BatchClock {
    cancel_at: tokio::time::Instant,
    pub(super) answer_by: tokio::time::Instant,
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
        let columns = BatchColumns::of(jobs.iter().map(PlaceJob::request))?;
        let session = self.session(clock.cancel_at).await?;
        let backend = session.backend().clone();
        let cause = match session.place(&columns, clock.cancel_at).await {
            Written::Committed(placement) => {
                return Ok(outcome::answer(&self.store, jobs, placement, clock).await);
            }
            Written::Unreplicated(placement, warning) => {
                let answers = outcome::answer(&self.store, jobs, placement, clock).await;
                return Ok(
                    outcome::confirm(&self.database, answers, &backend, &warning, clock).await,
                );
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
        Ok(outcome::settle(&self.database, jobs, &backend, &cause, clock).await)
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
        PlaceJob::new(
            order,
            None,
            crate::domain::Owner::for_tests(),
            Duration::from_secs(5),
        )
        .0
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
