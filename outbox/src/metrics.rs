//! Prometheus metrics of the relay and the consumers, registered in the
//! owning application's registry.

use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry,
};

use time::OffsetDateTime;

use crate::relay::BatchReport;
use crate::stats::Pending;

/// Batch-size buckets: from single rows to the largest batches.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
];
/// Lag buckets in seconds: from a millisecond to minutes of backlog.
const LAG_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// What the relay did.
#[derive(Clone)]
pub struct RelayMetrics {
    pub batch_rows: Histogram,
    pub published: IntCounter,
    pub messages: IntCounter,
    pub refused: IntCounter,
    pub refused_batches: IntCounter,
    pub set_aside: IntCounter,
    pub failures: IntCounter,
    /// Per batch: how old its oldest row was when the broker confirmed it.
    pub publish_lag_seconds: Histogram,
    /// The outbox gauges are NaN while the outbox cannot be read: a
    /// figure of before would be taken for a current one.
    pub pending: Gauge,
    pub oldest_pending_seconds: Gauge,
    pub set_aside_rows: Gauge,
}

impl RelayMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = RelayMetrics {
            batch_rows: Histogram::with_opts(
                HistogramOpts::new("outbox_relay_batch_rows", "Rows per relay batch")
                    .buckets(BATCH_BUCKETS.to_vec()),
            )?,
            published: IntCounter::new(
                "outbox_relay_published_events_total",
                "Events confirmed by the broker and marked published",
            )?,
            messages: IntCounter::new(
                "outbox_relay_published_messages_total",
                "AMQP messages confirmed by the broker",
            )?,
            refused: IntCounter::new(
                "outbox_relay_refused_total",
                "Rows refused for themselves (nacked or unroutable while their neighbours passed, or oversized)",
            )?,
            refused_batches: IntCounter::new(
                "outbox_relay_refused_batches_total",
                "Batches the broker refused whole (a broker or topology problem; nothing counted against their rows)",
            )?,
            set_aside: IntCounter::new(
                "outbox_relay_set_aside_total",
                "Rows set aside after repeated refusals",
            )?,
            failures: IntCounter::new(
                "outbox_relay_failures_total",
                "Batches that failed (store or broker unreachable)",
            )?,
            publish_lag_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "outbox_relay_publish_lag_seconds",
                    "Per batch, time from the commit of the oldest row it sent for the first time to the broker's confirm (the relay's clock against the database's)",
                )
                .buckets(LAG_BUCKETS.to_vec()),
            )?,
            pending: Gauge::new(
                "outbox_pending",
                "Outbox rows not yet published (NaN while the outbox cannot be read)",
            )?,
            oldest_pending_seconds: Gauge::new(
                "outbox_lag_seconds",
                "Age of the oldest unpublished outbox row",
            )?,
            set_aside_rows: Gauge::new(
                "outbox_set_aside",
                "Outbox rows set aside, waiting for an operator",
            )?,
        };
        registry.register(Box::new(metrics.batch_rows.clone()))?;
        registry.register(Box::new(metrics.published.clone()))?;
        registry.register(Box::new(metrics.messages.clone()))?;
        registry.register(Box::new(metrics.refused.clone()))?;
        registry.register(Box::new(metrics.refused_batches.clone()))?;
        registry.register(Box::new(metrics.set_aside.clone()))?;
        registry.register(Box::new(metrics.failures.clone()))?;
        registry.register(Box::new(metrics.publish_lag_seconds.clone()))?;
        registry.register(Box::new(metrics.pending.clone()))?;
        registry.register(Box::new(metrics.oldest_pending_seconds.clone()))?;
        registry.register(Box::new(metrics.set_aside_rows.clone()))?;
        Ok(metrics)
    }

    /// Metrics nobody scrapes, for tools and tests.
    pub fn unregistered() -> Self {
        Self::register(&Registry::new()).expect("a fresh registry accepts every metric")
    }

    pub(crate) fn observe_batch(&self, report: &BatchReport) {
        self.batch_rows
            .observe((report.published + report.refused) as f64);
        self.published.inc_by(report.published as u64);
        self.messages.inc_by(report.messages as u64);
        self.refused.inc_by(report.refused as u64);
        self.set_aside.inc_by(report.set_aside as u64);
        if let Some(oldest) = report.oldest_confirmed {
            let lag = OffsetDateTime::now_utc() - oldest;
            self.publish_lag_seconds
                .observe(lag.as_seconds_f64().max(0.0));
        }
    }

    pub(crate) fn observe_pending(&self, pending: &Pending) {
        self.pending.set(pending.rows as f64);
        self.oldest_pending_seconds.set(pending.oldest_age_seconds);
        self.set_aside_rows.set(pending.set_aside as f64);
    }

    /// The outbox could not be read: its gauges say nothing (NaN) rather
    /// than an old figure.
    pub(crate) fn forget_pending(&self) {
        for gauge in [
            &self.pending,
            &self.oldest_pending_seconds,
            &self.set_aside_rows,
        ] {
            gauge.set(f64::NAN);
        }
    }
}

/// What the consumers did, by queue.
#[derive(Clone)]
pub struct ConsumerMetrics {
    /// Events by queue and outcome: applied, duplicate, dead_lettered.
    pub events: IntCounterVec,
    pub batch_events: HistogramVec,
    /// From the event's commit in the producer to its commit here.
    pub lag_seconds: HistogramVec,
    pub failures: IntCounterVec,
    /// 1 while subscribed to the queue; readiness reads it.
    pub connected: IntGaugeVec,
    /// Dead letters of the queue waiting for an operator.
    pub dead_letters: IntGaugeVec,
}

impl ConsumerMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = ConsumerMetrics {
            events: IntCounterVec::new(
                Opts::new(
                    "inbox_events_total",
                    "Events received, by queue and outcome (applied, duplicate, dead_lettered)",
                ),
                &["queue", "outcome"],
            )?,
            batch_events: HistogramVec::new(
                HistogramOpts::new("inbox_batch_events", "Events per consumer batch")
                    .buckets(BATCH_BUCKETS.to_vec()),
                &["queue"],
            )?,
            lag_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "consumer_lag_seconds",
                    "Time from an event's commit at its producer to its commit here",
                )
                .buckets(LAG_BUCKETS.to_vec()),
                &["queue"],
            )?,
            failures: IntCounterVec::new(
                Opts::new(
                    "consumer_failures_total",
                    "Batches that failed and were left for redelivery",
                ),
                &["queue"],
            )?,
            connected: IntGaugeVec::new(
                Opts::new(
                    "consumer_connected",
                    "1 while the consumer is subscribed to its queue",
                ),
                &["queue"],
            )?,
            dead_letters: IntGaugeVec::new(
                Opts::new(
                    "dead_letters",
                    "Dead letters of the queue waiting for an operator (`outbox dead-letters list`)",
                ),
                &["queue"],
            )?,
        };
        registry.register(Box::new(metrics.dead_letters.clone()))?;
        registry.register(Box::new(metrics.connected.clone()))?;
        registry.register(Box::new(metrics.events.clone()))?;
        registry.register(Box::new(metrics.batch_events.clone()))?;
        registry.register(Box::new(metrics.lag_seconds.clone()))?;
        registry.register(Box::new(metrics.failures.clone()))?;
        Ok(metrics)
    }

    /// Metrics nobody scrapes, for tools and tests.
    pub fn unregistered() -> Self {
        Self::register(&Registry::new()).expect("a fresh registry accepts every metric")
    }

    /// Whether the consumer of `queue` is subscribed.
    pub fn is_connected(&self, queue: &str) -> bool {
        self.connected.with_label_values(&[queue]).get() == 1
    }
}
