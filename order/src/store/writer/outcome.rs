//! What each job of a batch is answered once its statement's fate is
//! known: committed (each order priced from the replica's view the
//! statement returned), committed while its wait for a standby was
//! cancelled (kept only once the server that takes writes holds it), or
//! unknown (the server process that ran it ended, then its orders looked
//! up: [`super::session`]).

use time::OffsetDateTime;
use tokio::time::timeout_at;
use tokio_postgres::Config;
use uuid::Uuid;

use super::plan::{Priced, plan_batch};
use super::session::{self, Backend, Doubt, Placement};
use super::worker::BatchClock;
use super::{PlaceError, PlaceJob, PlaceResult, Placed};
use crate::domain::{Order, OrderStatus};
use crate::store::{OrderStore, StoreError, StoreResult};

/// The answers of a batch whose statement committed: each order
/// priced from the replica's view the statement returned, as the
/// statement itself priced it.
pub(super) async fn answer(
    store: &OrderStore,
    jobs: &[PlaceJob],
    placement: Placement,
    clock: BatchClock,
) -> Vec<PlaceResult> {
    if !placement.inserted.is_empty() {
        // Their order.created rows are committed: this process's relay
        // need not wait for its poll.
        outbox::relay::rows_committed();
    }
    let plan = plan_batch(jobs.iter().map(PlaceJob::request), &placement.prices);
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
        let answer = timeout_at(clock.answer_by, answer_from_key(store, &jobs[job]))
            .await
            .unwrap_or_else(|_| Err(StoreError::database_unavailable("no answer in time")));
        outcomes[job] = Some(answer.unwrap_or_else(|error| Err(error.into())));
    }
    outcomes
        .into_iter()
        .map(|outcome| outcome.unwrap_or(Err(PlaceError::Internal("order left unanswered".into()))))
        .collect()
}

/// The answers of a batch whose connection died under its statement:
/// the server process that ran it is ended, then its orders looked up
/// on the server that takes writes now. An order found was placed; one
/// not found on the server that ran the statement was not (a retry,
/// with its key if it has one, places it or finds its key's order).
/// One not found after a failover, or a lookup that fails, leaves the
/// outcome unknown.
pub(super) async fn settle(
    database: &Config,
    jobs: &[PlaceJob],
    backend: &Backend,
    cause: &str,
    clock: BatchClock,
) -> Vec<PlaceResult> {
    let ids: Vec<Uuid> = jobs.iter().map(|job| job.id).collect();
    let settled = session::settle(
        database,
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
pub(super) async fn confirm(
    database: &Config,
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
    let settled = session::settle(
        database,
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
    Ok(match store.get_by_key(&job.owner, key).await? {
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
