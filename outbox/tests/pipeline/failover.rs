//! Failover across the brokers of an `AMQP_URL` list: a dead first address
//! is passed over, and a broker that goes away mid-run is replaced by the
//! next of the list, without losing a row.

use testkit::Proxy;

use crate::helpers::{TestOutbox, amqp_url, events};

/// An address where nothing listens: a port the system gave and took back.
fn dead_amqp_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("amqp://guest:guest@{addr}/%2f")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_whose_first_broker_is_dead_publishes_through_the_next() {
    let outbox = TestOutbox::new().await;
    let rows = events(50, 0);
    outbox.append(&rows).await;
    let list = format!("{},{}", dead_amqp_url(), amqp_url());
    let mut relay = outbox.relay_on(&list);
    assert_eq!(outbox.drain(&mut relay).await, rows.len());
    let received = outbox
        .take_events(&outbox.topology.order_created_queue(), rows.len())
        .await;
    assert_eq!(received.len(), rows.len());
    outbox.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_gone_mid_run_is_replaced_by_the_next_of_the_list() {
    let outbox = TestOutbox::new().await;
    let proxy = Proxy::start(testkit::server_addr(&amqp_url())).await;
    // The first address is the proxy: the relay connects through it.
    let list = format!("{},{}", proxy.amqp_url(), amqp_url());
    let mut relay = outbox.relay_on(&list);
    let before = events(40, 0);
    outbox.append(&before).await;
    assert_eq!(outbox.drain(&mut relay).await, before.len());
    assert!(
        proxy.connections() > 0,
        "the relay never connected through the first address"
    );

    // That broker goes away: its connection is cut and its port refuses.
    proxy.stop();
    let after = events(40, 40);
    outbox.append(&after).await;
    let published = outbox.drain_after_loss(&mut relay).await;
    assert_eq!(published, after.len(), "rows after the failover");
    let received = outbox
        .take_events(
            &outbox.topology.order_created_queue(),
            before.len() + after.len(),
        )
        .await;
    let distinct: std::collections::HashSet<_> = received.iter().map(|e| e.id).collect();
    assert_eq!(distinct.len(), before.len() + after.len(), "a row was lost");
    // What /readyz shows: the relay's connection is on the second broker.
    let relay_name = outbox.relay_config().connection_name;
    let on = outbox::broker::connections()
        .into_iter()
        .find(|(name, _)| *name == relay_name)
        .map(|(_, node)| node);
    assert_eq!(on, Some(outbox::broker::describe(&amqp_url())));
    outbox.cleanup().await;
}
