//! What each database did during a load run, from `pg_stat_database`:
//! transactions committed, rows inserted, updated and deleted, and buffer
//! accesses (hits and reads), read before and after. Divided by the orders
//! placed, they say what one order costs the database, whatever the
//! server's CPU is also doing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The counters of one database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct DatabaseCounters {
    pub commits: f64,
    pub inserts: f64,
    pub updates: f64,
    pub deletes: f64,
    /// Shared buffers hit plus blocks read.
    pub buffers: f64,
}

impl DatabaseCounters {
    /// `self - before`, each divided by `per`.
    pub fn per(&self, before: &DatabaseCounters, per: f64) -> DatabaseCounters {
        let per = per.max(1.0);
        DatabaseCounters {
            commits: (self.commits - before.commits) / per,
            inserts: (self.inserts - before.inserts) / per,
            updates: (self.updates - before.updates) / per,
            deletes: (self.deletes - before.deletes) / per,
            buffers: (self.buffers - before.buffers) / per,
        }
    }
}

/// The counters of each database named, by name.
pub async fn snapshot(
    client: &tokio_postgres::Client,
    databases: &[&str],
) -> anyhow::Result<BTreeMap<String, DatabaseCounters>> {
    // The statistics a backend collected are published at most once a
    // second; a snapshot right after the work may miss the last second.
    let rows = client
        .query(
            "SELECT datname, xact_commit::float8, tup_inserted::float8, tup_updated::float8, \
                    tup_deleted::float8, (blks_hit + blks_read)::float8 \
             FROM pg_stat_database WHERE datname = ANY($1)",
            &[&databases],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get(0)?,
                DatabaseCounters {
                    commits: row.try_get(1)?,
                    inserts: row.try_get(2)?,
                    updates: row.try_get(3)?,
                    deletes: row.try_get(4)?,
                    buffers: row.try_get(5)?,
                },
            ))
        })
        .collect()
}
