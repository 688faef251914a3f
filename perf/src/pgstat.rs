//! What each database did during a load run, from `pg_stat_database`:
//! transactions committed, rows inserted, updated and deleted, and buffer
//! accesses (hits and reads); and the WAL the whole server wrote, from
//! `pg_stat_wal`: records, full-page images, bytes. Read before and after
//! and divided by the orders placed, they say what one order costs the
//! database, whatever the server's CPU is also doing, and barely depend on
//! the machine.

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

/// What the server wrote to its WAL (all databases: the pipeline's upkeep
/// competes with its commits for the same log).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct WalCounters {
    pub records: f64,
    /// Of those records, the ones carrying a full-page image.
    pub full_page_images: f64,
    pub bytes: f64,
}

impl WalCounters {
    /// `self - before`, each divided by `per`.
    pub fn per(&self, before: &WalCounters, per: f64) -> WalCounters {
        let per = per.max(1.0);
        WalCounters {
            records: (self.records - before.records) / per,
            full_page_images: (self.full_page_images - before.full_page_images) / per,
            bytes: (self.bytes - before.bytes) / per,
        }
    }
}

/// The server's WAL counters.
pub async fn wal(client: &tokio_postgres::Client) -> anyhow::Result<WalCounters> {
    let row = client
        .query_one(
            "SELECT wal_records::float8, wal_fpi::float8, wal_bytes::float8 FROM pg_stat_wal",
            &[],
        )
        .await?;
    Ok(WalCounters {
        records: row.try_get(0)?,
        full_page_images: row.try_get(1)?,
        bytes: row.try_get(2)?,
    })
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
