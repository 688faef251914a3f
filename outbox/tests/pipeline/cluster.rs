//! On a three-node RabbitMQ cluster (`make cluster`): a quorum queue takes
//! events through one node and gives them out through another, and a node
//! lost mid-run costs no event: the relay goes on through the next node of
//! its list. The node is lost behind a proxy in front of it, never by
//! stopping a node others may be using.
//!
//! Runs when the cluster answers (`CLUSTER_AMQP_URL`, by default the list
//! `make cluster` prints); otherwise it says it was skipped and why. CI
//! starts the cluster and sets `REQUIRE_CLUSTER=1`: there it fails instead.

use std::net::TcpStream;
use std::time::Duration;

use outbox::broker::BrokerUrl;
use testkit::Proxy;

use crate::helpers::{TestOutbox, events};

const MAKE_CLUSTER_URL: &str = "amqp://guest:guest@127.0.0.1:5681/%2f,\
    amqp://guest:guest@127.0.0.1:5682/%2f,amqp://guest:guest@127.0.0.1:5683/%2f";

/// The cluster's node URLs, if three of them answer.
fn cluster() -> Option<Vec<String>> {
    let list = testkit::env_or("CLUSTER_AMQP_URL", MAKE_CLUSTER_URL);
    let urls: Vec<String> = outbox::broker::urls(&list)
        .into_iter()
        .map(str::to_owned)
        .collect();
    let answering = urls
        .iter()
        .filter(|url| {
            TcpStream::connect_timeout(&testkit::server_addr(url), Duration::from_secs(1)).is_ok()
        })
        .count();
    if urls.len() >= 3 && answering == urls.len() {
        return Some(urls);
    }
    let why = format!(
        "{answering} of {} nodes answer at {} (start the cluster with `make cluster`)",
        urls.len(),
        outbox::broker::describe(&list)
    );
    if std::env::var("REQUIRE_CLUSTER").is_ok_and(|required| required == "1") {
        panic!("REQUIRE_CLUSTER=1, yet no three-node cluster: {why}");
    }
    eprintln!("skipped: no three-node RabbitMQ cluster: {why}");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_lost_mid_run_costs_no_event_on_a_three_node_cluster() {
    let Some(nodes) = cluster() else { return };
    let outbox = TestOutbox::new().await;
    // The relay's first node is behind a proxy; the other two are direct.
    let proxy = Proxy::start(testkit::server_addr(&nodes[0])).await;
    let relay_list = format!("{},{},{}", proxy.amqp_url(), nodes[1], nodes[2]);
    let mut relay = outbox.relay_on(&relay_list);
    let before = events(40, 0);
    outbox.append(&before).await;
    assert_eq!(outbox.drain(&mut relay).await, before.len());
    assert!(
        proxy.connections() > 0,
        "the relay never used the first node"
    );

    // The first node is gone for this relay: its connection is cut, its
    // port refuses.
    proxy.stop();
    let after = events(40, 40);
    outbox.append(&after).await;
    let published = outbox.drain_after_loss(&mut relay).await;
    assert_eq!(published, after.len(), "rows after the node was lost");

    // Read through the third node: the queue is the cluster's.
    let mut config = outbox.consumer_config();
    config.amqp_url = BrokerUrl::new(&format!("{},{}", nodes[2], nodes[1]));
    let report = outbox.consume_all_with(config).await;
    assert_eq!(report.applied, before.len() + after.len(), "{report:?}");
    let effects = outbox.effects().await;
    let applications: i32 = effects.values().map(|(_, applications)| applications).sum();
    let total: i64 = effects.values().map(|(total, _)| total).sum();
    assert_eq!(applications, 80, "{effects:?}");
    assert_eq!(total, (0..80).sum::<i64>(), "{effects:?}");

    let connection = outbox::broker::connect(&nodes[1], "test cleanup")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let _ = outbox.topology.delete(&channel).await;
    outbox::broker::close(&connection, "done").await;
    outbox.cleanup().await;
}
