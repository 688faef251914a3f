//! Order handlers. Placing an order validates in the coroutine, queues the
//! job for the group-commit writer (503 at once if the queue is full) and
//! parks until its commit.

use serde::Serialize;
use service::http::{Request, Response, query};
use uuid::Uuid;

use super::{ApiError, AppState};
use crate::domain::{NewOrder, Order, OrderStatus};
use crate::store::writer::{PlaceError, PlaceJob, PlaceResult, Placed, SubmitError};

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 1000;

fn require_json(request: &Request) -> Result<(), ApiError> {
    if request.declares_json() {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

pub(super) fn place(state: &AppState, request: &Request) -> Result<Response, ApiError> {
    require_json(request)?;
    let order = NewOrder::parse(request.body())?;
    let key = request
        .idempotency_key()
        .map_err(|_| ApiError::InvalidIdempotencyKey)?
        .map(str::to_owned);
    let placed = match submit(state, order.clone(), key.clone())? {
        Err(PlaceError::ReplicaMiss(missing)) => {
            learn_products(state, missing)?;
            submit(state, order, key)?
        }
        other => other,
    };
    match placed? {
        Placed::Created(order) => Ok(
            Response::json(201, &order).with_header("Location", format!("/orders/{}", order.id))
        ),
        Placed::Existing(order) => Ok(
            Response::json(200, &order).with_header("Location", format!("/orders/{}", order.id))
        ),
    }
}

/// Queues one job and parks until the writer answers (see
/// [`crate::store::writer`] for why that answer is always definite).
fn submit(
    state: &AppState,
    order: NewOrder,
    idempotency_key: Option<String>,
) -> Result<PlaceResult, ApiError> {
    let (job, waiting) = PlaceJob::new(order, idempotency_key, state.request_timeout);
    state.writer.try_submit(job).map_err(|error| match error {
        SubmitError::Full => ApiError::Overloaded,
        SubmitError::Closed => ApiError::Unavailable("the order writer (stopping)"),
    })?;
    Ok(waiting.outcome())
}

/// Asks the product service about products the replica has not seen and
/// records them. A product it does not know is 422; the product service
/// being down is 503, with nothing written.
fn learn_products(state: &AppState, missing: Vec<i64>) -> Result<(), ApiError> {
    let (catalog, store) = (state.catalog.clone(), state.store.clone());
    state.bridge.run(async move {
        for id in missing {
            match catalog.product(id).await {
                Ok(Some(product)) => store.record_product(&product).await?,
                Ok(None) => return Err(ApiError::UnknownProduct(id)),
                Err(error) => {
                    tracing::warn!(%error, product = id, "product service unavailable for a replica miss");
                    return Err(ApiError::Unavailable("the product service"));
                }
            }
        }
        Ok(())
    })?
}

pub(super) fn get(state: &AppState, segment: &str) -> Result<Response, ApiError> {
    let id = Uuid::try_parse(segment).map_err(|_| ApiError::OrderNotFound(segment.to_owned()))?;
    let store = state.store.clone();
    let order = state.bridge.run(async move { store.get(id).await })??;
    order
        .map(|order| Response::json(200, &order))
        .ok_or_else(|| ApiError::OrderNotFound(segment.to_owned()))
}

#[derive(Serialize)]
struct Page {
    items: Vec<Order>,
    /// Pass as `after` for the next page; null on the last page.
    next_after: Option<Uuid>,
}

pub(super) fn list(state: &AppState, request: &Request) -> Result<Response, ApiError> {
    let limit = query::integer(request.query(), "limit", DEFAULT_PAGE, 1..=MAX_PAGE)
        .map_err(ApiError::BadQuery)?;
    let after = match query::param(request.query(), "after") {
        None => None,
        Some(text) => Some(
            Uuid::try_parse(&text)
                .map_err(|_| ApiError::BadQuery("after must be an order id".into()))?,
        ),
    };
    let status = match query::param(request.query(), "status") {
        None => None,
        Some(text) => Some(OrderStatus::parse(&text).ok_or_else(|| {
            ApiError::BadQuery("status must be PENDING, CONFIRMED or REJECTED".into())
        })?),
    };
    let store = state.store.clone();
    let items = state
        .bridge
        .run(async move { store.list(after, status, limit).await })??;
    let next_after = (items.len() as i64 == limit)
        .then(|| items.last().map(|order| order.id))
        .flatten();
    Ok(Response::json(200, &Page { items, next_after }))
}
