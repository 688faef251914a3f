//! Order handlers. Placing an order validates in the coroutine, queues the
//! job for the group-commit writer (503 at once if the queue is full) and
//! parks until its commit.

use http_api::auth::Caller;
use http_api::paging::PageRequest;
use http_api::{ApiError, Request, Response, json, query};
use uuid::Uuid;

use super::{AppState, OrderError};
use crate::domain::{NewOrder, OrderStatus, Owner, Readable};
use crate::store::writer::{PlaceError, PlaceJob, PlaceResult, Placed, SubmitError};

pub(super) fn place(
    state: &AppState,
    request: &Request,
    caller: &Caller,
    _: &str,
) -> Result<Response, ApiError> {
    let order = NewOrder::parse(json::body(request)?)?;
    let key = request.idempotency_key()?.map(str::to_owned);
    let owner = Owner::of(caller);
    let placed = match submit(state, order.clone(), key.clone(), owner.clone())? {
        Err(PlaceError::ReplicaMiss(missing)) => {
            learn_products(state, missing)?;
            submit(state, order, key, owner)?
        }
        other => other,
    };
    let (status, order) = match placed? {
        Placed::Created(order) => (201, order),
        Placed::Existing(order) => (200, order),
    };
    Ok(Response::json(status, &order).with_header("Location", format!("/orders/{}", order.id)))
}

/// Queues one job and parks until the writer answers (see
/// [`crate::store::writer`] for why that answer is always definite).
fn submit(
    state: &AppState,
    order: NewOrder,
    idempotency_key: Option<String>,
    owner: Owner,
) -> Result<PlaceResult, ApiError> {
    let (job, waiting) = PlaceJob::new(order, idempotency_key, owner, state.request_timeout);
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
                Ok(None) => return Err(OrderError::UnknownProduct(id).into()),
                Err(error) => {
                    tracing::warn!(%error, product = id, "product service unavailable for a replica miss");
                    return Err(ApiError::Unavailable("the product service"));
                }
            }
        }
        Ok(())
    })?
}

/// An order by id; another caller's is 404, as if it did not exist.
pub(super) fn get(
    state: &AppState,
    _: &Request,
    caller: &Caller,
    segment: &str,
) -> Result<Response, ApiError> {
    let id = Uuid::try_parse(segment).map_err(|_| OrderError::NotFound(segment.to_owned()))?;
    let (store, readable) = (state.store.clone(), Readable::by(caller));
    let order = state
        .bridge
        .run(async move { store.get(id, &readable).await })??;
    let order = order.ok_or_else(|| OrderError::NotFound(segment.to_owned()))?;
    Ok(Response::json(200, &order))
}

/// The caller's orders (every order, for `orders.read_all`).
pub(super) fn list(
    state: &AppState,
    request: &Request,
    caller: &Caller,
    _: &str,
) -> Result<Response, ApiError> {
    let page = PageRequest::parse(request, |text| {
        Uuid::try_parse(text).map_err(|_| "after must be an order id".to_owned())
    })?;
    let status = match query::param(request.query(), "status") {
        None => None,
        Some(text) => Some(OrderStatus::parse(&text).ok_or_else(|| {
            ApiError::BadQuery("status must be PENDING, CONFIRMED or REJECTED".into())
        })?),
    };
    let (store, after, limit) = (state.store.clone(), page.after, page.limit);
    let readable = Readable::by(caller);
    let orders = state
        .bridge
        .run(async move { store.list(&readable, after, status, limit).await })??;
    Ok(page.answer(orders, |order| order.id))
}
