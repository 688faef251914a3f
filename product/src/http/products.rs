//! Product handlers. Each parses and validates in the coroutine, then runs
//! the store and cache work on tokio through the bridge. Writes invalidate
//! the product's cache entry after their commit, before answering.

use serde::Serialize;
use service::http::{Request, Response, query};

use super::{ApiError, AppState};
use crate::cache::{ProductCache, StockUpdate};
use crate::domain::{NewProduct, Product, ProductChanges, StockDelta, parse_id};
use crate::store::{AdjustOutcome, Created, StoreError, StoreResult};

const DEFAULT_PAGE: i64 = 50;
const MAX_PAGE: i64 = 1000;

fn require_json(request: &Request) -> Result<(), ApiError> {
    if request.declares_json() {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType)
    }
}

fn product_id(segment: &str) -> Result<i64, ApiError> {
    parse_id(segment).ok_or_else(|| ApiError::ProductNotFound(segment.to_owned()))
}

/// Before a write commits: raises the product's fence to the version being
/// written and drops its entry, so no reader can see or put back the old
/// value. If Redis cannot take it, the write is rolled back (503): a write
/// committed without it would be read stale until the entry's TTL.
async fn invalidate_before_commit(cache: &ProductCache, id: i64, version: i64) -> StoreResult<()> {
    cache.invalidate(id, version).await.map_err(|error| {
        cache
            .metrics()
            .write_failures
            .with_label_values(&["invalidate"])
            .inc();
        StoreError::Cache(error.to_string())
    })
}

/// After a committed create or update: bring the live counter up.
async fn after_write(cache: &ProductCache, product: &Product) {
    let update = StockUpdate {
        id: product.id,
        decrement: 0,
        stock: product.stock,
        version: product.version,
    };
    cache
        .best_effort("stock_sync", cache.sync_stock(&[update]))
        .await;
}

/// With an Idempotency-Key, a retry (same key, same body) answers 200 with
/// the product the first request created, and never creates a second.
pub(super) fn create(state: &AppState, request: &Request) -> Result<Response, ApiError> {
    require_json(request)?;
    let key = request
        .idempotency_key()
        .map_err(|_| ApiError::InvalidIdempotencyKey)?
        .map(str::to_owned);
    let new = NewProduct::parse(request.body())?;
    let (store, cache) = (state.store.clone(), state.cache.clone());
    let created = state.bridge.run(async move {
        let created = store.create(&new, key.as_deref()).await?;
        if let Created::New(product) = &created {
            after_write(&cache, product).await;
        }
        Ok::<_, ApiError>(created)
    })??;
    let (status, product) = match created {
        Created::New(product) => (201, product),
        Created::Repeated(product) => (200, product),
        Created::KeyReused => return Err(ApiError::IdempotencyKeyReused),
        Created::Deleted(id) => return Err(ApiError::ProductNotFound(id.to_string())),
    };
    Ok(Response::json(status, &product)
        .with_header("Location", format!("/products/{}", product.id)))
}

pub(super) fn get(state: &AppState, segment: &str) -> Result<Response, ApiError> {
    let id = product_id(segment)?;
    let (store, cache) = (state.store.clone(), state.cache.clone());
    let product = state
        .bridge
        .run(async move { read_through(&store, &cache, id).await })??;
    match product {
        Some(product) => Ok(Response::json(200, &product)),
        None => Err(ApiError::ProductNotFound(segment.to_owned())),
    }
}

/// Redis first (entry and live counter), PostgreSQL on a miss, filling
/// Redis from it. With Redis down, PostgreSQL answers alone.
async fn read_through(
    store: &crate::store::ProductStore,
    cache: &ProductCache,
    id: i64,
) -> Result<Option<Product>, ApiError> {
    let lookups = &cache.metrics().lookups;
    match cache.lookup(id).await {
        Ok(lookup) => {
            if let (Some(mut product), Some((stock, version))) = (lookup.cached, lookup.stock) {
                if version != crate::cache::TOMBSTONE_VERSION {
                    lookups.with_label_values(&["hit"]).inc();
                    product.stock = stock;
                    return Ok(Some(product));
                }
            }
            lookups.with_label_values(&["miss"]).inc();
        }
        Err(error) => {
            lookups.with_label_values(&["error"]).inc();
            tracing::debug!(%error, "cache lookup failed; reading PostgreSQL");
            return Ok(store.get(id).await?);
        }
    }
    let product = store.get(id).await?;
    if let Some(product) = &product {
        cache.best_effort("fill", cache.fill(product)).await;
    }
    Ok(product)
}

#[derive(Serialize)]
struct Page {
    items: Vec<Product>,
    /// Pass as `after` for the next page; null on the last page.
    next_after: Option<i64>,
}

pub(super) fn list(state: &AppState, request: &Request) -> Result<Response, ApiError> {
    let limit = query::integer(request.query(), "limit", DEFAULT_PAGE, 1..=MAX_PAGE)
        .map_err(ApiError::BadQuery)?;
    let after =
        query::integer(request.query(), "after", 0, 0..=i64::MAX).map_err(ApiError::BadQuery)?;
    let store = state.store.clone();
    let items = state
        .bridge
        .run(async move { store.list(after, limit).await })??;
    let next_after = (items.len() as i64 == limit)
        .then(|| items.last().map(|p| p.id))
        .flatten();
    Ok(Response::json(200, &Page { items, next_after }))
}

fn update(state: &AppState, segment: &str, changes: ProductChanges) -> Result<Response, ApiError> {
    let id = product_id(segment)?;
    let (store, cache) = (state.store.clone(), state.cache.clone());
    let product = state.bridge.run(async move {
        let product = store
            .update(id, &changes, |id, version| {
                invalidate_before_commit(&cache, id, version)
            })
            .await?;
        if let Some(product) = &product {
            after_write(&cache, product).await;
        }
        Ok::<_, ApiError>(product)
    })??;
    product
        .map(|product| Response::json(200, &product))
        .ok_or_else(|| ApiError::ProductNotFound(segment.to_owned()))
}

pub(super) fn replace(
    state: &AppState,
    segment: &str,
    request: &Request,
) -> Result<Response, ApiError> {
    product_id(segment)?;
    require_json(request)?;
    update(state, segment, NewProduct::parse(request.body())?.into())
}

pub(super) fn patch(
    state: &AppState,
    segment: &str,
    request: &Request,
) -> Result<Response, ApiError> {
    product_id(segment)?;
    require_json(request)?;
    update(state, segment, ProductChanges::parse(request.body())?)
}

pub(super) fn delete(state: &AppState, segment: &str) -> Result<Response, ApiError> {
    let id = product_id(segment)?;
    let (store, cache) = (state.store.clone(), state.cache.clone());
    let deleted = state.bridge.run(async move {
        let version = store
            .delete(id, |id, version| {
                invalidate_before_commit(&cache, id, version)
            })
            .await?;
        if version.is_some() {
            cache
                .best_effort("tombstone", cache.tombstone_stock(id))
                .await;
        }
        Ok::<_, ApiError>(version.is_some())
    })??;
    if deleted {
        Ok(Response::empty(204))
    } else {
        Err(ApiError::ProductNotFound(segment.to_owned()))
    }
}

pub(super) fn adjust_stock(
    state: &AppState,
    segment: &str,
    request: &Request,
) -> Result<Response, ApiError> {
    let id = product_id(segment)?;
    let key = request
        .idempotency_key()
        .map_err(|_| ApiError::InvalidIdempotencyKey)?
        .ok_or(ApiError::MissingIdempotencyKey)?
        .to_owned();
    require_json(request)?;
    let delta = StockDelta::parse(request.body())?;
    let (store, cache) = (state.store.clone(), state.cache.clone());
    let outcome = state.bridge.run(async move {
        let outcome = crate::store::adjust_stock(store.pool(), id, &key, delta, |id, version| {
            invalidate_before_commit(&cache, id, version)
        })
        .await?;
        if let AdjustOutcome::Applied(product) = &outcome {
            after_write(&cache, product).await;
        }
        Ok::<_, ApiError>(outcome)
    })??;
    match outcome {
        AdjustOutcome::Applied(product) | AdjustOutcome::Repeated(product) => {
            Ok(Response::json(200, &product))
        }
        AdjustOutcome::KeyReused => Err(ApiError::IdempotencyKeyReused),
        AdjustOutcome::NotFound => Err(ApiError::ProductNotFound(segment.to_owned())),
        AdjustOutcome::OutOfRange { stock } => Err(ApiError::StockOutOfRange { stock }),
    }
}
