//! Definite answers: a 201 means the order exists, any other answer means
//! it does not, however long its commit is held up and even when the
//! connection dies while the commit is in flight.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::helpers::{Options, TestPipeline, spawn_pipeline_with, spawn_pipeline_with_options};

/// A transaction of the test's own holding `LOCK TABLE orders IN
/// EXCLUSIVE MODE`: every insert into orders waits for it.
async fn lock_orders(pipeline: &TestPipeline) -> tokio_postgres::Client {
    let client = platform::db::connect(&pipeline.order_database)
        .await
        .unwrap();
    client
        .batch_execute("BEGIN; LOCK TABLE orders IN EXCLUSIVE MODE")
        .await
        .unwrap();
    client
}

async fn order_count(pipeline: &TestPipeline) -> i64 {
    pipeline
        .stores
        .orders
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0)
}

async fn order_exists(pipeline: &TestPipeline, id: &str) -> bool {
    pipeline
        .stores
        .orders
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM orders WHERE id::text = $1)",
            &[&id],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_is_definite_while_the_orders_table_is_locked() {
    let mut pipeline = spawn_pipeline_with(&[("ORDER_REQUEST_TIMEOUT_MS", "1000")]).await;
    let product = pipeline.create_product("Locked", 100, 100).await;
    let (status, _) = pipeline
        .place(json!({"product_id": product, "quantity": 1}))
        .await;
    assert_eq!(status, 201, "the warm-up order");

    let lock = lock_orders(&pipeline).await;
    // Requests every 300 ms while the lock is held for 2.5 s: the first
    // ones run out of time, the last ones commit once it is released.
    let requests = (0..8).map(|n| {
        let request = pipeline.order_request(&json!({"product_id": product, "quantity": 1}));
        async move {
            tokio::time::sleep(Duration::from_millis(300 * n)).await;
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    });
    let release = async {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        lock.batch_execute("COMMIT").await.unwrap();
    };
    let (answers, ()) = tokio::join!(join_all(requests), release);

    let mut created = 0;
    for (status, body) in &answers {
        match status {
            201 => {
                created += 1;
                let id = body["id"].as_str().unwrap();
                assert!(
                    order_exists(&pipeline, id).await,
                    "a 201 order is missing: {body}"
                );
            }
            503 => assert_eq!(body["error"]["code"], "dependency_unavailable", "{body}"),
            other => panic!("unexpected answer {other}: {body}"),
        }
    }
    assert!(
        created < answers.len(),
        "no request ran out of time: {answers:?}"
    );
    // Orders written are exactly the warm-up and the 201s: no 503 order
    // was committed afterwards.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        order_count(&pipeline).await,
        1 + created as i64,
        "{answers:?}"
    );
    pipeline.assert_invariants().await;
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_connection_dies_mid_commit_is_settled_by_a_lookup() {
    let proxy =
        testkit::Proxy::start(testkit::server_addr(&testkit::database_url("postgres"))).await;
    let mut pipeline = spawn_pipeline_with_options(Options {
        order: &[("ORDER_REQUEST_TIMEOUT_MS", "3000")],
        order_database_proxy: Some(&proxy),
        ..Options::default()
    })
    .await;
    let product = pipeline.create_product("Cut", 100, 100).await;
    let (status, _) = pipeline
        .place(json!({"product_id": product, "quantity": 1}))
        .await;
    assert_eq!(status, 201, "the warm-up order");

    // The insert waits on the lock; its connection is cut meanwhile. The
    // server process behind it still waits, and would commit the order
    // once the lock is gone, unless the writer ends it first.
    let lock = lock_orders(&pipeline).await;
    let placing = pipeline
        .order_request(&json!({"product_id": product, "quantity": 2}))
        .send();
    let cut = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.cut_all();
    };
    let (response, ()) = tokio::join!(placing, cut);
    let response = response.unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    lock.batch_execute("COMMIT").await.unwrap();

    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "dependency_unavailable", "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        order_count(&pipeline).await,
        1,
        "the cut order was written after its 503"
    );
    // The writer reconnects: the next order goes through.
    let (status, body) = pipeline
        .place(json!({"product_id": product, "quantity": 1}))
        .await;
    assert_eq!(status, 201, "{body}");
    pipeline.assert_invariants().await;
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_waiting_behind_a_held_commit_show_in_the_writer_queue_gauge() {
    let mut pipeline = spawn_pipeline_with(&[
        ("ORDER_WRITER_LINGER_MS", "0"),
        ("ORDER_QUEUE_CAPACITY", "64"),
    ])
    .await;
    let product = pipeline.create_product("Queued", 100, 100).await;
    assert_eq!(pipeline.metric("order_writer_queue_capacity").await, 64);
    assert_eq!(pipeline.metric("order_writer_queued").await, 0);
    let lock = lock_orders(&pipeline).await;
    let order = json!({"product_id": product, "quantity": 1});
    let first = tokio::spawn(pipeline.order_request(&order).send());
    // The writer has taken the first order and its insert waits on the
    // lock: the next three queue behind it. (Asked on another connection:
    // a transaction sees the server's activity as it was at its start.)
    let mut waiting = false;
    for _ in 0..100 {
        waiting = pipeline
            .stores
            .orders
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(waiting, "the writer's insert never waited on the lock");
    let behind: Vec<_> = (0..3)
        .map(|_| tokio::spawn(pipeline.order_request(&order).send()))
        .collect();
    let mut queued = 0;
    for _ in 0..100 {
        queued = pipeline.metric("order_writer_queued").await;
        if queued == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    lock.batch_execute("COMMIT").await.unwrap();
    assert_eq!(queued, 3, "orders queued behind the held commit");
    let mut statuses = vec![first.await.unwrap().unwrap().status().as_u16()];
    for request in behind {
        statuses.push(request.await.unwrap().unwrap().status().as_u16());
    }
    assert_eq!(statuses, vec![201; 4]);
    assert_eq!(pipeline.metric("order_writer_queued").await, 0);
    pipeline.assert_invariants().await;
    pipeline.stop().await;
}
