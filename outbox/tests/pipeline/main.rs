//! The outbox library against real PostgreSQL and RabbitMQ: every test has
//! its own database and its own exchange and queue names.

mod cluster;
mod consumer;
mod cursor;
mod dead_letters;
mod failover;
mod helpers;
mod inbox;
mod interleavings;
mod partitions;
mod pg_cluster;
mod relay;
mod replay;
mod schedule;
mod upgrade;
mod vacuum;
