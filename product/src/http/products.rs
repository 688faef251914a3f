//! Product handlers. Each parses and validates in the coroutine, then runs
//! the store and cache work on tokio through the bridge. Writes invalidate
//! the product's cache entry after their commit, before answering.

use http_api::auth::Caller;
use http_api::paging::PageRequest;
use http_api::{ApiError, Request, Response, json, query};

use super::{AppState, ProductError};
use crate::cache::{ProductCache, StockUpdate};
use crate::domain::{NewProduct, Product, ProductChanges, StockDelta, parse_id};
use crate::store::{AdjustOutcome, Created, StoreError, StoreResult};

/// How the cache is named when a write cannot reach it.
const CACHE: &str = "the cache (Redis)";

fn not_found(segment: &str) -> ApiError {
    ProductError::NotFound(segment.to_owned()).into()
}

fn product_id(segment: &str) -> Result<i64, ApiError> {
    parse_id(segment).ok_or_else(|| not_found(segment))
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
        StoreError::Unavailable {
            store: CACHE,
            cause: error.to_string(),
        }
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
pub(super) fn create(
    state: &AppState,
    request: &Request,
    _: &Caller,
    _: &str,
) -> Result<Response, ApiError> {
    let body = json::body(request)?;
    let key = request.idempotency_key()?.map(str::to_owned);
    let new = NewProduct::parse(body)?;
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
        Created::Deleted(id) => return Err(not_found(&id.to_string())),
    };
    Ok(Response::json(status, &product)
        .with_header("Location", format!("/products/{}", product.id)))
}

pub(super) fn get(state: &AppState, _: &Request, segment: &str) -> Result<Response, ApiError> {
    let id = product_id(segment)?;
    let (store, cache) = (state.store.clone(), state.cache.clone());
    let product = state
        .bridge
        .run(async move { read_through(&store, &cache, id).await })??;
    let product = product.ok_or_else(|| not_found(segment))?;
    Ok(Response::json(200, &product))
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

pub(super) fn list(state: &AppState, request: &Request, _: &str) -> Result<Response, ApiError> {
    let page = PageRequest::parse(request, |text| {
        query::integer_in("after", text, 0..=i64::MAX)
    })?;
    let (store, after, limit) = (state.store.clone(), page.after.unwrap_or(0), page.limit);
    let products = state
        .bridge
        .run(async move { store.list(after, limit).await })??;
    Ok(page.answer(products, |product| product.id))
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
    let product = product.ok_or_else(|| not_found(segment))?;
    Ok(Response::json(200, &product))
}

pub(super) fn replace(
    state: &AppState,
    request: &Request,
    _: &Caller,
    segment: &str,
) -> Result<Response, ApiError> {
    product_id(segment)?;
    update(
        state,
        segment,
        NewProduct::parse(json::body(request)?)?.into(),
    )
}

pub(super) fn patch(
    state: &AppState,
    request: &Request,
    _: &Caller,
    segment: &str,
) -> Result<Response, ApiError> {
    product_id(segment)?;
    update(state, segment, ProductChanges::parse(json::body(request)?)?)
}

pub(super) fn delete(
    state: &AppState,
    _: &Request,
    _: &Caller,
    segment: &str,
) -> Result<Response, ApiError> {
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
        Err(not_found(segment))
    }
}

pub(super) fn adjust_stock(
    state: &AppState,
    request: &Request,
    _: &Caller,
    segment: &str,
) -> Result<Response, ApiError> {
    let id = product_id(segment)?;
    let key = request
        .idempotency_key()?
        .ok_or(ApiError::MissingIdempotencyKey)?
        .to_owned();
    let delta = StockDelta::parse(json::body(request)?)?;
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
        AdjustOutcome::NotFound => Err(not_found(segment)),
        AdjustOutcome::OutOfRange { stock } => Err(ProductError::StockOutOfRange { stock }.into()),
    }
}
