//! The short version of `make chaos`: orders keep arriving while the
//! product service restarts and every database connection is cut; every
//! acknowledged order survives and the invariants hold.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;

use crate::helpers::spawn_pipeline;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_orders_survive_a_restart_and_cut_connections() {
    let mut pipeline = spawn_pipeline().await;
    let id = pipeline.create_product("Chaos", 100, 400).await;
    let client = pipeline.client.clone();
    let url = format!("{}/orders", pipeline.order_address);
    let placing = tokio::spawn(async move {
        let mut accepted = Vec::new();
        let mut failed = 0;
        for _ in 0..30 {
            let round = join_all((0..10).map(|_| {
                client
                    .post(&url)
                    .json(&json!({"product_id": id, "quantity": 1}))
                    .send()
            }))
            .await;
            for response in round {
                match response {
                    Ok(response) if response.status() == 201 => {
                        let body: serde_json::Value = response.json().await.unwrap();
                        accepted.push(body["id"].as_str().unwrap().to_owned());
                    }
                    _ => failed += 1,
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (accepted, failed)
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let terminated = pipeline.terminate_database_connections().await;
    assert!(terminated > 0, "no connection was cut");
    pipeline.restart_product().await;
    pipeline.terminate_database_connections().await;
    let (accepted, failed) = placing.await.unwrap();
    assert!(
        accepted.len() > 100,
        "too few orders got through: {} accepted, {failed} failed",
        accepted.len()
    );

    let report = pipeline.assert_invariants().await;
    let found = pipeline
        .stores
        .orders
        .query(
            "SELECT id::text FROM orders WHERE id::text = ANY($1) AND status <> 'PENDING'",
            &[&accepted],
        )
        .await
        .unwrap()
        .len();
    assert_eq!(
        found,
        accepted.len(),
        "an acknowledged order was lost or left undecided"
    );
    assert!(report.confirmed as usize >= accepted.len().min(400));
    pipeline.stop().await;
}
