//! The order service and the whole stock loop over real HTTP, PostgreSQL,
//! Redis and RabbitMQ: a product service and an order service per test,
//! each with its own database, sharing one broker namespace.

mod answers;
mod bad_input;
mod faults;
mod helpers;
mod idempotency;
mod ownership;
mod pg_cluster;
mod roles;
mod stock_loop;
mod stuck_orders;
mod upkeep;
