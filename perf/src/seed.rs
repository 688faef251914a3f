//! Seeding a load run: products created through the product API, their
//! initial stock written down for the invariant check afterwards.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// What a load run starts from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Seed {
    /// Products the scenarios order from.
    pub products: Vec<i64>,
    /// The one product of the contention scenario.
    pub hot: i64,
    /// Stock of every seeded product when the run began.
    pub initial: BTreeMap<i64, i64>,
}

/// Creates `count` products with `stock` each and a hot one with
/// `hot_stock`, then waits until the order service's replica knows them
/// all (so the run measures the steady path, not replica misses).
pub async fn seed(
    product_url: &str,
    orders: &tokio_postgres::Client,
    count: usize,
    stock: i64,
    hot_stock: i64,
) -> anyhow::Result<Seed> {
    platform::tls::install_crypto_provider();
    let http = reqwest::Client::new();
    let tokens = crate::tokens::Tokens::from_env()?;
    let mut initial = BTreeMap::new();
    let mut products = Vec::with_capacity(count);
    for n in 0..=count {
        let (name, units) = if n == count {
            ("hot product".to_owned(), hot_stock)
        } else {
            (format!("load product {n}"), stock)
        };
        let body =
            serde_json::json!({"name": name, "price": 100 + (n as i64 % 900), "stock": units});
        let response = loop {
            let mut post = http.post(format!("{product_url}/products")).json(&body);
            if let Some(token) = tokens.catalog() {
                post = post.bearer_auth(token);
            }
            let response = post.send().await?;
            // Over the subject's rate (AUTH_SUBJECT_RATE): wait as told.
            if response.status().as_u16() != 429 {
                break response;
            }
            let wait = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok()?.parse().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait)).await;
        };
        anyhow::ensure!(
            response.status().as_u16() == 201,
            "creating a product answered {}",
            response.status()
        );
        let id = response.json::<serde_json::Value>().await?["id"]
            .as_i64()
            .unwrap_or_default();
        initial.insert(id, units);
        if n < count {
            products.push(id);
        }
    }
    let hot = *initial.keys().last().unwrap_or(&0);
    let ids: Vec<i64> = initial.keys().copied().collect();
    let started = Instant::now();
    loop {
        let known: i64 = orders
            .query_one(
                "SELECT count(*) FROM product_replica WHERE id = ANY($1)",
                &[&ids],
            )
            .await?
            .get(0);
        if known as usize == ids.len() || started.elapsed() > Duration::from_secs(30) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Seed {
        products,
        hot,
        initial,
    })
}
