//! Measuring the pipeline honestly.
//!
//! # Layout
//! - [`invariants`]: the checks every end-to-end test and load run ends
//!   with: stock adds up, Redis agrees with SQL, nothing is left pending.
pub mod invariants;
