//! Measuring the pipeline honestly: every figure we publish comes from
//! these tools, run by `make load` or the commands in docs/PERFORMANCE.md.
//!
//! # Layout
//! - [`invariants`]: the checks every end-to-end test and load run ends
//!   with: stock adds up, Redis agrees with SQL, nothing is left pending.
//! - [`ceilings`]: what PostgreSQL and RabbitMQ do alone on this machine.
//! - [`relay_bench`]: the relay's throughput beside the broker's ceiling.
//! - [`seed`]: the products a load run orders from, and their initial stock.
//! - [`tokens`]: the bearer tokens the tools send, from the environment.
//! - [`fill`]: both databases grown to the size weeks of traffic leave.
//! - [`load`]: the open-loop load generator (`perf load`).
//! - [`cpu`] and [`pgstat`]: what a run cost each process (from /proc)
//!   and each database (from `pg_stat_database`); [`machine_sample`]:
//!   where the machine's time went each second of a long run.
//! - [`report`]: a run's figures, the services' metrics, the costs per
//!   order and the invariant check as one page; [`chart`] draws a ramp.

pub mod ceilings;
pub mod chart;
pub mod cpu;
pub mod fill;
pub mod invariants;
pub mod load;
pub mod machine_sample;
pub mod pgstat;
pub mod relay_bench;
pub mod report;
pub mod seed;
pub mod tokens;
