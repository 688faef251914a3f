//! The order service: places orders (each order, its items and its
//! `order.created` outbox row in one transaction, group-committed with
//! other requests), prices them from a local replica of the product
//! catalogue, and tracks their status from the stock replies.
//!
//! # Layout
//! - [`config`]: settings from the environment.
//! - [`startup`]: `Application::build` and `run_until_stopped`.
//! - [`domain`]: validated order requests; orders as answered.
//! - [`http`]: routing, handlers and the error → status mapping.
//! - [`store`]: reading orders, the replica, and the group-commit
//!   [`store::writer`].
//! - [`events`]: the stock-reply and product-event consumers.
//! - [`catalog`]: asking the product service about an unknown product.
//! - [`openapi`]: the API description served at `/openapi.json`.
//! - `migrations`: the service's own tables (its `migrations` folder,
//!   embedded at build time), applied after the outbox library's.

pub mod catalog;
pub mod config;
pub mod domain;
pub mod events;
pub mod http;
pub mod openapi;
pub mod startup;
pub mod store;

refinery::embed_migrations!("migrations");
