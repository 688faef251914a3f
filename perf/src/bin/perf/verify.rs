//! After a run: the invariants, once the pipeline drained, and every order
//! a client was told was accepted, found and decided.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use perf::invariants;
use perf::seed::Seed;
use serde_json::json;

use crate::environment::{database, read_json, stores, write_json};

pub(crate) async fn check(
    seed: &Path,
    timeout_secs: u64,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    let seed: Seed = serde_json::from_value(read_json(seed)?)?;
    let mut stores = stores().await?;
    let (drained, waited) =
        invariants::wait_for_drain(&stores, Duration::from_secs(timeout_secs)).await?;
    let report = invariants::check(&mut stores, &seed.initial).await?;
    let result = json!({
        "drained": drained,
        "drain_seconds": waited.as_secs_f64(),
        "holds": report.holds() && drained,
        "orders": report.orders, "pending": report.pending, "confirmed": report.confirmed, "rejected": report.rejected,
        "products": report.products,
        "violations": report.violations,
    });
    println!(
        "invariants {}: {} orders ({} CONFIRMED, {} REJECTED, {} PENDING) over {} products; drained in {:.1}s",
        if report.holds() && drained {
            "hold"
        } else {
            "BROKEN"
        },
        report.orders,
        report.confirmed,
        report.rejected,
        report.pending,
        report.products,
        waited.as_secs_f64()
    );
    for violation in &report.violations {
        println!("  {violation}");
    }
    if let Some(out) = out {
        write_json(&out, &result)?;
    }
    anyhow::ensure!(report.holds() && drained, "invariants broken");
    Ok(())
}

pub(crate) async fn verify_accepted(log: &Path, out: Option<PathBuf>) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    let ids: Vec<uuid::Uuid> = text
        .lines()
        .filter_map(|line| line.split("/orders/").nth(1))
        .filter_map(|rest| rest.get(..36))
        .filter_map(|id| uuid::Uuid::parse_str(id).ok())
        .collect();
    let orders = platform::db::connect(&database("ORDER_DATABASE_URL")?).await?;
    let rows = orders
        .query("SELECT id, status FROM orders WHERE id = ANY($1)", &[&ids])
        .await?;
    let found: std::collections::HashMap<uuid::Uuid, String> =
        rows.iter().map(|row| (row.get(0), row.get(1))).collect();
    let missing = ids.iter().filter(|id| !found.contains_key(id)).count();
    let undecided = found.values().filter(|status| *status == "PENDING").count();
    println!(
        "accepted orders: {}; missing from the database: {missing}; still PENDING: {undecided}",
        ids.len()
    );
    if let Some(out) = out {
        write_json(
            &out,
            &json!({"accepted": ids.len(), "missing": missing, "pending": undecided}),
        )?;
    }
    anyhow::ensure!(
        missing == 0 && undecided == 0,
        "acknowledged orders were lost or left undecided"
    );
    Ok(())
}
