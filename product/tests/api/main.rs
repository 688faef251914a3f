//! The product service over real HTTP, against real PostgreSQL, Redis and
//! RabbitMQ. Every test starts its own application with its own database,
//! Redis key prefix and broker namespace.

mod auth;
mod bad_input;
mod cache;
mod helpers;
mod products;
mod secrets;
mod stock;
mod upkeep;
