//! On PostgreSQL under Patroni (`make pg-cluster`: a primary and two
//! synchronous standbys, strict): the primary killed while orders are
//! placed loses no order answered 201, and a commit no standby confirmed
//! is never answered 201.
//!
//! Runs when the cluster has a leader and two streaming replicas;
//! otherwise it says it was skipped and why. CI starts the cluster and
//! sets `REQUIRE_PG_CLUSTER=1`: there it fails instead. The tests kill
//! and restart the cluster's nodes, one test at a time, and leave it with
//! three nodes again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::helpers::{Options, TestPipeline, error_code, spawn_pipeline_with_options};

/// One test at a time: each kills the primary.
static CLUSTER: Mutex<()> = Mutex::const_new(());

/// Runs `scripts/pg-cluster.sh args`; its output, if it succeeded.
fn cluster(args: &[&str]) -> Option<String> {
    testkit::pg_cluster::script(args)
}

/// The cluster's URL for the tests' databases, if it is healthy.
fn cluster_url() -> Option<String> {
    testkit::pg_cluster::healthy_url("postgres")
}

/// Waits until a node other than `old` leads; which one.
async fn new_leader(old: &str, limit: Duration) -> String {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(leader) = cluster(&["leader"]).filter(|leader| leader != old) {
            return leader;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no new leader {limit:?} after pg-{old} was lost");
}

/// Starts `node` again and waits until it has rejoined as a streaming
/// replica.
async fn rejoin(node: &str) {
    cluster(&["start", node]).expect("the node's Patroni starts");
    let started = Instant::now();
    while cluster(&["healthy"]).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "pg-{node} did not rejoin as a streaming replica"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn pipeline_on(url: &str, order: &[(&str, &str)]) -> TestPipeline {
    spawn_pipeline_with_options(Options {
        database_server: Some(url),
        order,
        ..Options::default()
    })
    .await
}

/// How many rows `orders` holds for each of `ids`.
async fn copies(pipeline: &TestPipeline, ids: &[String]) -> BTreeMap<String, i64> {
    let ids: Vec<uuid::Uuid> = ids.iter().map(|id| id.parse().unwrap()).collect();
    let rows = pipeline
        .stores
        .orders
        .query(
            "SELECT id::text, count(*) FROM orders WHERE id = ANY($1) GROUP BY id",
            &[&ids],
        )
        .await
        .unwrap();
    rows.iter().map(|row| (row.get(0), row.get(1))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_primary_loses_no_order_answered_201() {
    let _one_at_a_time = CLUSTER.lock().await;
    let Some(url) = cluster_url() else { return };
    let mut pipeline = pipeline_on(&url, &[]).await;
    let product = pipeline.create_product("Failover", 100, 100_000).await;
    let keyed = json!({"product_id": product, "quantity": 2});
    let first = pipeline
        .order_request(&keyed)
        .header("Idempotency-Key", "failover-retry")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let client = pipeline.client.clone();
    let orders = format!("{}/orders", pipeline.order_address);
    let killed_at = Instant::now() + Duration::from_secs(3);
    let placing = tokio::spawn(async move {
        let mut accepted = Vec::new();
        let mut after_kill = 0;
        let mut refused: BTreeMap<u16, u32> = BTreeMap::new();
        let until = killed_at + Duration::from_secs(22);
        while Instant::now() < until {
            let round = join_all((0..10).map(|_| {
                client
                    .post(&orders)
                    .json(&json!({"product_id": product, "quantity": 1}))
                    .send()
            }))
            .await;
            for response in round {
                match response {
                    Ok(response) if response.status() == 201 => {
                        let body: Value = response.json().await.unwrap();
                        accepted.push(body["id"].as_str().unwrap().to_owned());
                        if Instant::now() > killed_at {
                            after_kill += 1;
                        }
                    }
                    Ok(response) => *refused.entry(response.status().as_u16()).or_default() += 1,
                    Err(_) => *refused.entry(0).or_default() += 1,
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (accepted, after_kill, refused)
    });

    tokio::time::sleep_until(killed_at.into()).await;
    let old = cluster(&["leader"]).expect("a leader");
    cluster(&["kill", &old]).expect("the leader's processes killed");
    let leader = new_leader(&old, Duration::from_secs(60)).await;
    let (accepted, after_kill, refused) = placing.await.unwrap();
    rejoin(&old).await;

    eprintln!(
        "pg-{old} killed, pg-{leader} leads: {} orders answered 201 ({after_kill} after the kill), refused by status {refused:?}",
        accepted.len()
    );
    assert!(after_kill > 0, "no order was placed after the failover");
    // A client retrying with its key after the failover gets its first
    // order back, never a second one.
    let retried = pipeline
        .order_request(&keyed)
        .header("Idempotency-Key", "failover-retry")
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status(), 200);
    let retried: Value = retried.json().await.unwrap();
    assert_eq!(retried["id"], first["id"], "{retried}");
    pipeline.reconnect_stores().await;
    let found = copies(&pipeline, &accepted).await;
    let missing: Vec<&String> = accepted
        .iter()
        .filter(|id| !found.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "answered 201, lost in the failover: {missing:?}"
    );
    assert!(found.values().all(|copies| *copies == 1), "{found:?}");
    pipeline.assert_invariants().await;
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_no_standby_confirmed_is_not_answered_201() {
    let _one_at_a_time = CLUSTER.lock().await;
    let Some(url) = cluster_url() else { return };
    let mut pipeline = pipeline_on(&url, &[("ORDER_REQUEST_TIMEOUT_MS", "1500")]).await;
    let product = pipeline.create_product("Unconfirmed", 100, 100).await;
    let order = json!({"product_id": product, "quantity": 1});
    let (status, _) = pipeline.place(order.clone()).await;
    assert_eq!(status, 201);
    assert!(pipeline.wait_until_decided(Duration::from_secs(20)).await);

    // The primary's WAL senders stop: its commits are written locally and
    // wait for standbys that receive nothing more, until the writer
    // cancels the wait at its deadline. The row is then visible on the
    // primary, but the relay must not publish it: no standby has it.
    let old = cluster(&["leader"]).expect("a leader");
    cluster(&["hold-wal", &old]).expect("the primary's WAL senders stopped");
    let response = pipeline.order_request(&order).send().await.unwrap();
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let body: Value = response.json().await.unwrap();
    // Then the primary is lost, and a standby that never had the order
    // takes over.
    cluster(&["kill", &old]).expect("the leader's processes killed");
    let leader = new_leader(&old, Duration::from_secs(60)).await;

    assert_ne!(
        status, 201,
        "answered 201 for a commit no standby had: {body}"
    );
    assert_eq!(error_code(status, &body, 503), "outcome_unknown", "{body}");
    let location = location.expect("an unknown outcome names the order");
    // The order is not on the new primary: a 201 would have been a lie.
    let started = Instant::now();
    let lookup = loop {
        let response = pipeline
            .client
            .get(format!("{}{location}", pipeline.order_address))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        if status != 503 || started.elapsed() > Duration::from_secs(30) {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(lookup, 404, "pg-{leader} should not hold {location}");
    rejoin(&old).await;
    pipeline.reconnect_stores().await;
    // Had its event been published, the product service would hold a
    // reservation for an order that does not exist.
    pipeline.assert_invariants().await;
    pipeline.stop().await;
}
