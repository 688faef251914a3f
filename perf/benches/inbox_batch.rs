//! Inbox batch planning on the stock side: deciding a batch of orders
//! all-or-nothing against the locked stock, in arrival order. The product
//! consumer runs this inside its transaction, while it holds the row locks,
//! so its cost is lock time for every other consumer of those products.

use std::collections::BTreeMap;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use outbox::events::{OrderCreated, OrderItem, Verdict};
use product::events::reservations::decide;
use uuid::Uuid;

fn batch(n: usize, items: usize) -> Vec<OrderCreated> {
    (0..n)
        .map(|i| OrderCreated {
            order_id: Uuid::now_v7(),
            items: (0..items)
                .map(|k| OrderItem {
                    product_id: 1 + ((i + k * 7) % 100) as i64,
                    quantity: 1 + (k % 3) as i64,
                })
                .collect(),
        })
        .collect()
}

fn inbox_batch(c: &mut Criterion) {
    let mut group = c.benchmark_group("inbox_batch");
    for (n, items) in [(32, 1), (256, 1), (256, 5)] {
        let orders = batch(n, items);
        group.bench_with_input(
            BenchmarkId::new(format!("decide orders of {items} items"), n),
            &orders,
            |b, orders| {
                b.iter(|| {
                    let mut stock: BTreeMap<i64, i64> = (1..=100).map(|id| (id, 200)).collect();
                    orders
                        .iter()
                        .filter(|order| decide(order, &mut stock) == Verdict::Reserved)
                        .count()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, inbox_batch);
criterion_main!(benches);
