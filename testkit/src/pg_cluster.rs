//! The Patroni cluster of `make pg-cluster` (`scripts/pg-cluster.sh`): a
//! primary and two synchronous standbys on 5441-5443. Tests that need it
//! run when it is healthy and say they were skipped otherwise; with
//! `REQUIRE_PG_CLUSTER=1` (CI starts the cluster) they fail instead.

use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/pg-cluster.sh");

/// Runs `scripts/pg-cluster.sh args`; its output, if it succeeded.
pub fn script(args: &[&str]) -> Option<String> {
    let output = Command::new("bash").arg(SCRIPT).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The cluster's multi-host URL of database `name`, if it has a leader
/// and two streaming replicas; `None` (said on stderr) if not, unless
/// `REQUIRE_PG_CLUSTER=1`, which panics.
pub fn healthy_url(name: &str) -> Option<String> {
    if script(&["healthy"]).is_some() {
        return script(&["url", name]);
    }
    let why =
        "no leader with two streaming replicas on 5441-5443 (start it with `make pg-cluster`)";
    if std::env::var("REQUIRE_PG_CLUSTER").is_ok_and(|required| required == "1") {
        panic!("REQUIRE_PG_CLUSTER=1, yet {why}");
    }
    eprintln!("skipped: no Patroni cluster: {why}");
    None
}
