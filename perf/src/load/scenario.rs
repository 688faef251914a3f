//! What the load generator sends: the `orders`, `hot` and `mixed`
//! scenarios of k6/pipeline.js, over the products of a seed file.

use crate::seed::Seed;

/// A scenario, as `SCENARIO` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// POST /orders over the seeded products, 1 to 3 units.
    Orders,
    /// Every order on the one hot product: the contention case.
    Hot,
    /// 80% GET /products/:id, 15% POST /orders, 5% PATCH of a price.
    Mixed,
}

/// Which service a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    Order,
    Product,
}

/// One request to send, and the status that means it worked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) service: Service,
    pub(crate) method: &'static str,
    pub(crate) path: String,
    pub(crate) body: Option<String>,
    pub(crate) expect: u16,
}

impl Request {
    /// Whether this request places an order.
    pub(crate) fn is_order(&self) -> bool {
        self.service == Service::Order
    }
}

fn order(product: i64, rng: &mut fastrand::Rng) -> Request {
    Request {
        service: Service::Order,
        method: "POST",
        path: "/orders".into(),
        body: Some(format!(
            r#"{{"product_id":{product},"quantity":{}}}"#,
            rng.i64(1..=3)
        )),
        expect: 201,
    }
}

impl Scenario {
    /// The next request of this scenario.
    pub(crate) fn next(self, seed: &Seed, rng: &mut fastrand::Rng) -> Request {
        let any = |rng: &mut fastrand::Rng| seed.products[rng.usize(..seed.products.len())];
        match self {
            Scenario::Orders => order(any(rng), rng),
            Scenario::Hot => order(seed.hot, rng),
            Scenario::Mixed => match rng.u32(..100) {
                0..80 => Request {
                    service: Service::Product,
                    method: "GET",
                    path: format!("/products/{}", any(rng)),
                    body: None,
                    expect: 200,
                },
                80..95 => order(any(rng), rng),
                // Price changes only: stock stays the stock loop's, so
                // the invariant check still adds up.
                _ => Request {
                    service: Service::Product,
                    method: "PATCH",
                    path: format!("/products/{}", any(rng)),
                    body: Some(format!(r#"{{"price":{}}}"#, rng.i64(100..1000))),
                    expect: 200,
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> Seed {
        Seed {
            products: vec![1, 2, 3],
            hot: 9,
            initial: Default::default(),
        }
    }

    #[test]
    fn mixed_is_mostly_reads_and_orders_carry_a_seeded_product() {
        let seed = seed();
        let mut rng = fastrand::Rng::with_seed(7);
        let requests: Vec<Request> = (0..10_000)
            .map(|_| Scenario::Mixed.next(&seed, &mut rng))
            .collect();
        let reads = requests.iter().filter(|r| r.method == "GET").count();
        let orders = requests.iter().filter(|r| r.is_order()).count();
        assert!((7_500..8_500).contains(&reads), "{reads}");
        assert!((1_200..1_800).contains(&orders), "{orders}");
        let hot = Scenario::Hot.next(&seed, &mut rng);
        assert_eq!(
            hot.body.as_deref().map(|b| b.contains(r#""product_id":9"#)),
            Some(true)
        );
    }
}
