//! Measuring the pipeline honestly: every figure we publish comes from
//! these tools, run by `make load` or the commands in docs/PERFORMANCE.md.
//!
//! # Layout
//! - [`invariants`]: the checks every end-to-end test and load run ends
//!   with: stock adds up, Redis agrees with SQL, nothing is left pending.
//! - [`ceilings`]: what PostgreSQL and RabbitMQ do alone on this machine.
//! - [`relay_bench`]: the relay's throughput beside the broker's ceiling.
//! - [`seed`]: the products a load run orders from, and their initial stock.
//! - [`report`]: k6's summary and the services' metrics as one page.

pub mod ceilings;
pub mod invariants;
pub mod relay_bench;
pub mod report;
pub mod seed;
