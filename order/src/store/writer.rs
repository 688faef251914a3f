//! The group-commit writer: places many orders in one transaction.
//!
//! Handlers put a [`PlaceJob`] on a bounded queue (full: 503 at once) and
//! park on its reply. A writer task takes whatever is queued (up to
//! `max_batch`, waiting at most `linger` for more), prices the orders from
//! the product replica, then inserts orders, items and their
//! `order.created` outbox rows in ONE statement (data-modifying `WITH`,
//! one array per column), which is its own transaction: two round trips
//! to PostgreSQL per batch, whatever its size. Only after it committed
//! does the writer answer every waiter. Nothing is acknowledged before its
//! commit, so nothing acknowledged is lost.
//!
//! While one batch commits, requests queue up for the next: batches grow
//! with load instead of each request paying for its own commit.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use deadpool_postgres::{Client, Object, Pool};
use outbox::events::{ORDER_CREATED, OrderCreated, OrderItem};
use outbox::writer::{self, EventColumns, NewEvent};
use prometheus::{Histogram, HistogramOpts, IntCounterVec, Opts, Registry};
use service::bridge::Reply;
use service::shutdown::Signal;
use time::OffsetDateTime;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{OrderStore, StoreError, StoreResult};
use crate::domain::{NewOrder, Order, OrderLine, OrderStatus};

/// A request to place one order, with where to send the answer.
pub struct PlaceJob {
    pub order: NewOrder,
    pub idempotency_key: Option<String>,
    pub reply: Reply<PlaceResult>,
    /// When its waiter gives up: a job still queued then is not written, so
    /// a request answered 503 for its timeout placed nothing.
    pub deadline: Instant,
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
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
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

/// Sizes and timing of the writer.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Writer tasks; each commits its own batches on its own connection.
    pub writers: usize,
    pub max_batch: usize,
    /// How long a writer waits for more jobs once it has one; 0 takes only
    /// what is already queued.
    pub linger: Duration,
    /// Jobs queued at most before requests get 503.
    pub capacity: usize,
}

/// Batch sizes and outcomes, for `/metrics`.
#[derive(Clone)]
pub struct WriterMetrics {
    pub batch_orders: Histogram,
    pub outcomes: IntCounterVec,
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
        };
        registry.register(Box::new(metrics.batch_orders.clone()))?;
        registry.register(Box::new(metrics.outcomes.clone()))?;
        Ok(metrics)
    }
}

/// Starts the writer tasks; they stop when `shutdown` fires and the queue
/// is empty.
pub fn start(
    pool: Pool,
    config: WriterConfig,
    metrics: WriterMetrics,
    shutdown: Signal,
) -> (WriterHandle, Vec<JoinHandle<()>>) {
    let (sender, receiver) = mpsc::channel(config.capacity.max(1));
    let receiver = Arc::new(Mutex::new(receiver));
    let tasks = (0..config.writers.max(1))
        .map(|_| {
            let writer = Writer {
                pool: pool.clone(),
                config,
                metrics: metrics.clone(),
            };
            tokio::spawn(writer.run(receiver.clone(), shutdown.clone()))
        })
        .collect();
    (WriterHandle { sender }, tasks)
}

struct Writer {
    pool: Pool,
    config: WriterConfig,
    metrics: WriterMetrics,
}

impl Writer {
    async fn run(self, receiver: Arc<Mutex<mpsc::Receiver<PlaceJob>>>, shutdown: Signal) {
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

    /// Writes a batch and answers every job. A batch the database refuses
    /// for its data (not for being unreachable) is retried one job at a
    /// time, so one bad job fails alone.
    async fn commit(&self, jobs: Vec<PlaceJob>) {
        let now = Instant::now();
        let (jobs, expired): (Vec<PlaceJob>, Vec<PlaceJob>) =
            jobs.into_iter().partition(|job| job.deadline > now);
        for job in expired {
            self.metrics.outcomes.with_label_values(&["expired"]).inc();
            job.reply.send(Err(PlaceError::Unavailable(
                "the request timed out before its turn to commit".into(),
            )));
        }
        if jobs.is_empty() {
            return;
        }
        self.metrics.batch_orders.observe(jobs.len() as f64);
        let outcomes = match place_batch(&self.pool, &jobs).await {
            Ok(outcomes) => outcomes,
            Err(error) if error.is_transient() || jobs.len() == 1 => {
                tracing::warn!(%error, orders = jobs.len(), "order batch failed");
                let failure = if error.is_transient() {
                    PlaceError::Unavailable(error.to_string())
                } else {
                    PlaceError::Internal(error.to_string())
                };
                jobs.iter().map(|_| Err(failure.clone())).collect()
            }
            Err(error) => {
                tracing::warn!(%error, orders = jobs.len(), "order batch refused; placing its orders one by one");
                let mut outcomes = Vec::with_capacity(jobs.len());
                for job in &jobs {
                    let outcome = place_batch(&self.pool, std::slice::from_ref(job))
                        .await
                        .map_err(PlaceError::from)
                        .and_then(|mut one| {
                            one.pop()
                                .unwrap_or(Err(PlaceError::Internal("no outcome".into())))
                        });
                    outcomes.push(outcome);
                }
                outcomes
            }
        };
        for (job, outcome) in jobs.into_iter().zip(outcomes) {
            let label = match &outcome {
                Ok(Placed::Created(_)) => "created",
                Ok(Placed::Existing(_)) => "existing",
                Err(PlaceError::ReplicaMiss(_)) => "replica_miss",
                Err(PlaceError::UnknownProduct(_)) => "unknown_product",
                Err(PlaceError::KeyReused) => "key_reused",
                Err(_) => "failed",
            };
            self.metrics.outcomes.with_label_values(&[label]).inc();
            job.reply.send(outcome);
        }
    }
}

/// What the replica says of a product: price, or deleted.
pub type Prices = HashMap<i64, (i64, bool)>;

const PRICES_SQL: &str = "SELECT id, price, deleted FROM product_replica WHERE id = ANY($1)";

/// Orders, their items and their `order.created` events in one statement:
/// the items and events only of the orders it inserted (an order whose key
/// a committed order holds is not). Placeholders: the four order columns,
/// the four item columns, then the outbox's five.
static PLACE_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH placed AS ( \
             INSERT INTO orders (id, status, total, idempotency_key, fingerprint) \
             SELECT id, 'PENDING', total, key, fingerprint \
             FROM unnest($1::uuid[], $2::int8[], $3::text[], $4::text[]) AS o(id, total, key, fingerprint) \
             ON CONFLICT (idempotency_key) DO NOTHING \
             RETURNING id, created_at), \
         items AS ( \
             INSERT INTO order_items (order_id, product_id, quantity, unit_price) \
             SELECT i.order_id, i.product_id, i.quantity, i.unit_price \
             FROM unnest($5::uuid[], $6::int8[], $7::int4[], $8::int8[]) \
                 AS i(order_id, product_id, quantity, unit_price) \
             WHERE i.order_id IN (SELECT id FROM placed)), \
         events AS ({} WHERE e.aggregate_id IN (SELECT id::text FROM placed)) \
         SELECT id, created_at FROM placed",
        writer::insert_sql(9)
    )
});

/// An order priced and ready to insert.
#[derive(Debug, Clone)]
pub struct Priced {
    /// Its job's position in the batch.
    pub job: usize,
    pub id: Uuid,
    pub lines: Vec<OrderLine>,
    pub total: i64,
    pub key: Option<String>,
    pub fingerprint: String,
}

/// What a batch will do, decided from the prices alone.
#[derive(Debug, Default)]
pub struct BatchPlan {
    /// Orders to insert.
    pub priced: Vec<Priced>,
    /// Jobs already answered (unknown or missing products).
    pub answered: Vec<(usize, PlaceError)>,
    /// Jobs whose key an earlier job of this batch holds: answered from
    /// that order after the commit.
    pub by_key: Vec<usize>,
}

/// Prices each request and sets aside those that cannot be placed now.
pub fn plan_batch<'a>(
    requests: impl IntoIterator<Item = (&'a NewOrder, Option<&'a str>)>,
    prices: &Prices,
) -> BatchPlan {
    let mut plan = BatchPlan::default();
    let mut keys_seen = HashSet::new();
    for (job, (order, key)) in requests.into_iter().enumerate() {
        match price(order, prices) {
            Err(error) => plan.answered.push((job, error)),
            Ok(_) if key.is_some_and(|key| !keys_seen.insert(key)) => plan.by_key.push(job),
            Ok((lines, total)) => plan.priced.push(Priced {
                job,
                id: Uuid::now_v7(),
                lines,
                total,
                key: key.map(str::to_owned),
                fingerprint: order.fingerprint(),
            }),
        }
    }
    plan
}

/// The orders and items of a batch, one array per column: what the
/// placing statement receives besides the events.
pub struct OrderColumns<'a> {
    pub ids: Vec<Uuid>,
    pub totals: Vec<i64>,
    pub keys: Vec<Option<&'a str>>,
    pub fingerprints: Vec<&'a str>,
    item_orders: Vec<Uuid>,
    item_products: Vec<i64>,
    item_quantities: Vec<i32>,
    item_prices: Vec<i64>,
}

impl<'a> OrderColumns<'a> {
    pub fn of(priced: &'a [Priced]) -> Self {
        let lines = priced
            .iter()
            .flat_map(|order| order.lines.iter().map(move |line| (order.id, line)));
        let (mut item_orders, mut item_products, mut item_quantities, mut item_prices) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (id, line) in lines {
            item_orders.push(id);
            item_products.push(line.product_id);
            // At most 10,000 by validation.
            item_quantities.push(line.quantity as i32);
            item_prices.push(line.unit_price);
        }
        OrderColumns {
            ids: priced.iter().map(|order| order.id).collect(),
            totals: priced.iter().map(|order| order.total).collect(),
            keys: priced.iter().map(|order| order.key.as_deref()).collect(),
            fingerprints: priced
                .iter()
                .map(|order| order.fingerprint.as_str())
                .collect(),
            item_orders,
            item_products,
            item_quantities,
            item_prices,
        }
    }

    /// The values of the placing statement's first eight placeholders.
    fn params(&self) -> [&(dyn ToSql + Sync); 8] {
        [
            &self.ids,
            &self.totals,
            &self.keys,
            &self.fingerprints,
            &self.item_orders,
            &self.item_products,
            &self.item_quantities,
            &self.item_prices,
        ]
    }
}

/// The `order.created` event of each priced order.
pub fn created_events(priced: &[Priced]) -> Result<Vec<NewEvent>, outbox::Error> {
    priced
        .iter()
        .map(|order| {
            let event = OrderCreated {
                order_id: order.id,
                items: order
                    .lines
                    .iter()
                    .map(|line| OrderItem {
                        product_id: line.product_id,
                        quantity: line.quantity,
                    })
                    .collect(),
            };
            NewEvent::new(order.id, ORDER_CREATED, &event)
        })
        .collect()
}

/// Places `jobs` in one statement; one outcome per job, in order.
async fn place_batch(pool: &Pool, jobs: &[PlaceJob]) -> StoreResult<Vec<PlaceResult>> {
    let (client, prices) = connect_and_price(pool, jobs).await?;
    let plan = plan_batch(
        jobs.iter()
            .map(|job| (&job.order, job.idempotency_key.as_deref())),
        &prices,
    );
    let mut outcomes: Vec<Option<PlaceResult>> = jobs.iter().map(|_| None).collect();
    for (job, error) in plan.answered {
        outcomes[job] = Some(Err(error));
    }
    let mut by_key = plan.by_key;
    let inserted = insert_batch(&client, &plan.priced).await?;
    drop(client);
    let (new, conflicting): (Vec<Priced>, Vec<Priced>) = plan
        .priced
        .into_iter()
        .partition(|order| inserted.contains_key(&order.id));
    by_key.extend(conflicting.iter().map(|order| order.job));
    for order in new {
        let created_at = inserted[&order.id];
        outcomes[order.job] = Some(Ok(Placed::Created(Order {
            id: order.id,
            status: OrderStatus::Pending,
            reason: None,
            items: order.lines,
            total: order.total,
            created_at,
            decided_at: None,
        })));
    }
    // Committed: from here on nothing may fail the batch as a whole, or its
    // orders would be answered as not placed (and placed again one by one).
    let store = OrderStore::new(pool.clone());
    for index in by_key {
        let answer = answer_from_key(&store, &jobs[index])
            .await
            .unwrap_or_else(|error| Err(error.into()));
        outcomes[index] = Some(answer);
    }
    Ok(outcomes
        .into_iter()
        .map(|outcome| outcome.unwrap_or(Err(PlaceError::Internal("order left unanswered".into()))))
        .collect())
}

/// Pooled connections the server cut (a restart, `pg_terminate_backend`)
/// that the pool has not noticed yet, tried before a batch gives up.
const DEAD_CONNECTIONS_SKIPPED: usize = 3;

/// A connection and the batch's prices. The read writes nothing, so a
/// connection that turns out dead here is dropped and another taken,
/// instead of failing the batch (and every batch queued behind it on the
/// pool's other dead connections) with 503.
async fn connect_and_price(pool: &Pool, jobs: &[PlaceJob]) -> StoreResult<(Object, Prices)> {
    let mut skipped = 0;
    loop {
        let client = pool.get().await?;
        match load_prices(&client, jobs).await {
            Ok(prices) => return Ok((client, prices)),
            Err(error) if error.is_transient() && skipped < DEAD_CONNECTIONS_SKIPPED => {
                tracing::debug!(%error, "a pooled connection failed a read; taking another");
                drop(Object::take(client));
                skipped += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// The replica's view of every product of the batch. Read just before the
/// insert, outside it: a price or deletion that lands in between is the
/// same as the order having come a moment earlier (the product service
/// rejects an order for a product deleted by then).
async fn load_prices(client: &Client, jobs: &[PlaceJob]) -> StoreResult<Prices> {
    let ids: HashSet<i64> = jobs
        .iter()
        .flat_map(|job| job.order.product_ids())
        .collect();
    let ids: Vec<i64> = ids.into_iter().collect();
    let statement = client.prepare_cached(PRICES_SQL).await?;
    let rows = client.query(&statement, &[&ids]).await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, (row.try_get(1)?, row.try_get(2)?))))
        .collect()
}

/// Prices an order from the replica: every product known and not deleted.
fn price(order: &NewOrder, prices: &Prices) -> Result<(Vec<OrderLine>, i64), PlaceError> {
    let missing: Vec<i64> = order
        .product_ids()
        .filter(|id| !prices.contains_key(id))
        .collect();
    if !missing.is_empty() {
        return Err(PlaceError::ReplicaMiss(missing));
    }
    let mut lines = Vec::with_capacity(order.items().len());
    let mut total: i64 = 0;
    for item in order.items() {
        let (unit_price, deleted) = prices[&item.product_id];
        if deleted {
            return Err(PlaceError::UnknownProduct(item.product_id));
        }
        // 100 items × 10,000 units × 10^12 cents stays below 2^63.
        total = total.saturating_add(unit_price.saturating_mul(item.quantity));
        lines.push(OrderLine {
            product_id: item.product_id,
            quantity: item.quantity,
            unit_price,
        });
    }
    Ok((lines, total))
}

/// Inserts the orders with their items and events, in one statement;
/// returns the ids actually inserted (an order whose key another committed
/// order holds is not) with their creation time.
async fn insert_batch(
    client: &Client,
    priced: &[Priced],
) -> StoreResult<HashMap<Uuid, OffsetDateTime>> {
    if priced.is_empty() {
        return Ok(HashMap::new());
    }
    let columns = OrderColumns::of(priced);
    let events = created_events(priced)?;
    let event_columns = EventColumns::of(&events);
    let mut params: Vec<&(dyn ToSql + Sync)> = columns.params().to_vec();
    params.extend(event_columns.params());
    let statement = client.prepare_cached(&PLACE_SQL).await?;
    let rows = client.query(&statement, &params).await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
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
