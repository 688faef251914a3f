//! The product service: product CRUD with a Redis cache by id, invalidated
//! on every write, and the stock side of the order loop: `order.created`
//! in through the idempotent inbox, an all-or-nothing reservation with a
//! conditional SQL decrement, the Redis counters moved after the commit,
//! `stock.reserved` / `stock.rejected` out through the outbox.
//!
//! # Layout
//! - [`config`]: settings from the environment.
//! - [`startup`]: `Application::build` and `run_until_stopped`.
//! - [`domain`]: validated names, prices, stock and deltas.
//! - [`http`]: routing, handlers and the error → status mapping.
//! - [`store`]: SQL, each write with its outbox event.
//! - [`cache`]: Redis: the product cache and the live stock counters.
//! - [`events`]: the `order.created` consumer.
//! - [`reconcile`]: rebuilding the Redis counters from PostgreSQL.
//! - [`openapi`]: the API description served at `/openapi.json`.
//! - `migrations`: the service's own tables (its `migrations` folder,
//!   embedded at build time), applied after the outbox library's.

pub mod cache;
pub mod config;
pub mod domain;
pub mod events;
pub mod http;
pub mod openapi;
pub mod reconcile;
pub mod startup;
pub mod store;

refinery::embed_migrations!("migrations");
