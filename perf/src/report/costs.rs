//! What one order cost: CPU of each process (from /proc, before and after
//! the run) and the work of each database (from `pg_stat_database`),
//! divided by the orders the writer placed during the run.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cpu::CpuSnapshot;
use crate::pgstat::{DatabaseCounters, WalCounters};

/// The processes that make the pipeline, in the report's order.
pub const PIPELINE: &[(&str, &str)] = &[
    ("postgres", "PostgreSQL"),
    ("order", "order"),
    ("rabbitmq", "RabbitMQ"),
    ("product", "product"),
    ("redis", "Redis"),
    // Patroni agents and etcd, when FAILOVER_PORTS names them.
    ("failover", "Patroni+etcd"),
];

/// A run's costs per order placed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Costs {
    pub orders: f64,
    /// µs of CPU per order, by process (`PIPELINE`'s names).
    pub cpu_us: BTreeMap<String, f64>,
    /// Context switches per order, by process: wake-ups, which a machine
    /// whose speed drifts moves far less than CPU time.
    #[serde(default)]
    pub switches: BTreeMap<String, f64>,
    /// The pipeline's sum: every process but the load generator.
    pub pipeline_cpu_us: f64,
    /// The load generator's µs of CPU per request it sent.
    pub generator_cpu_us_per_request: Option<f64>,
    /// Per order, by database.
    pub databases: BTreeMap<String, DatabaseCounters>,
    /// Commits per order, all databases summed.
    pub commits: f64,
    /// The server's WAL per order.
    #[serde(default)]
    pub wal: Option<WalCounters>,
}

/// The costs of `orders` orders, from snapshots taken before and after.
pub fn per_order(
    orders: f64,
    cpu_before: &CpuSnapshot,
    cpu_after: &CpuSnapshot,
    databases_before: &BTreeMap<String, DatabaseCounters>,
    databases_after: &BTreeMap<String, DatabaseCounters>,
) -> Costs {
    let per = orders.max(1.0);
    let cpu_us: BTreeMap<String, f64> = cpu_after
        .since(cpu_before)
        .into_iter()
        .map(|(name, seconds)| (name, 1e6 * seconds / per))
        .collect();
    let switches = cpu_after
        .switches_since(cpu_before)
        .into_iter()
        .map(|(name, switches)| (name, switches as f64 / per))
        .collect();
    let databases: BTreeMap<String, DatabaseCounters> = databases_after
        .iter()
        .filter_map(|(name, after)| {
            Some((name.clone(), after.per(databases_before.get(name)?, per)))
        })
        .collect();
    Costs {
        orders,
        pipeline_cpu_us: PIPELINE
            .iter()
            .filter_map(|(name, _)| cpu_us.get(*name))
            .sum(),
        cpu_us,
        switches,
        generator_cpu_us_per_request: None,
        commits: databases.values().map(|d| d.commits).sum(),
        databases,
        wal: None,
    }
}

impl Costs {
    /// The report's lines.
    pub fn lines(&self, generator: &str) -> Vec<String> {
        let parts: Vec<String> = PIPELINE
            .iter()
            .filter_map(|(name, label)| Some(format!("{label} {:.0}", self.cpu_us.get(*name)?)))
            .collect();
        let generator = self
            .generator_cpu_us_per_request
            .map_or(String::new(), |us| {
                format!("; {generator} {us:.0} µs per request")
            });
        let mut lines = vec![format!(
            "  CPU per order   pipeline {:.0} µs = {}{generator} (from /proc over {:.0} orders; every process's whole CPU counts: run on a quiet machine)",
            self.pipeline_cpu_us,
            parts.join(" + "),
            self.orders
        )];
        let switches: Vec<String> = PIPELINE
            .iter()
            .filter_map(|(name, label)| Some(format!("{label} {:.2}", self.switches.get(*name)?)))
            .collect();
        if !switches.is_empty() {
            lines.push(format!(
                "  switches/order  {} (context switches of each process's threads, from /proc: steadier than CPU on a drifting machine)",
                switches.join(", ")
            ));
        }
        for (name, db) in &self.databases {
            lines.push(format!(
                "  per order, {name:<8} {:.2} commits, {:.2} inserts, {:.2} updates, {:.2} deletes, {:.0} buffer accesses",
                db.commits, db.inserts, db.updates, db.deletes, db.buffers
            ));
        }
        lines.push(format!(
            "  commits         {:.2} per order, both databases",
            self.commits
        ));
        if let Some(wal) = &self.wal {
            lines.push(format!(
                "  WAL per order   {:.1} records ({:.2} with a full-page image), {:.0} bytes (pg_stat_wal: the whole server)",
                wal.records, wal.full_page_images, wal.bytes
            ));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_are_differences_per_order() {
        let snapshot = |postgres: f64, order: f64, switches: u64| CpuSnapshot {
            at: 0.0,
            seconds: [
                ("postgres".to_owned(), postgres),
                ("order".to_owned(), order),
            ]
            .into(),
            switches: [
                ("postgres".to_owned(), switches),
                ("order".to_owned(), 3 * switches),
            ]
            .into(),
        };
        let db = |commits: f64| {
            BTreeMap::from([(
                "orders".to_owned(),
                DatabaseCounters {
                    commits,
                    inserts: 4.0 * commits,
                    ..DatabaseCounters::default()
                },
            )])
        };
        let costs = per_order(
            1000.0,
            &snapshot(10.0, 2.0, 1_000),
            &snapshot(10.5, 2.25, 3_000),
            &db(100.0),
            &db(400.0),
        );
        assert!((costs.cpu_us["postgres"] - 500.0).abs() < 1e-9);
        assert!((costs.pipeline_cpu_us - 750.0).abs() < 1e-9);
        assert!((costs.commits - 0.3).abs() < 1e-9);
        assert!((costs.databases["orders"].inserts - 1.2).abs() < 1e-9);
        assert!((costs.switches["postgres"] - 2.0).abs() < 1e-9);
        assert!((costs.switches["order"] - 6.0).abs() < 1e-9);
        let lines = costs.lines("k6");
        assert!(lines[0].contains("pipeline 750 µs = PostgreSQL 500 + order 250"));
        assert!(lines[1].contains("switches/order  PostgreSQL 2.00, order 6.00"));
    }
}
