//! The writer's work per batch besides its one statement: laying N queued
//! orders out as one array per column with their `order.created` events
//! (what the placing statement receives), then answering each from the
//! replica's view the statement returns.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use order::domain::{ItemRequest, NewOrder, Owner};
use order::store::writer::{BatchColumns, Prices, Request, plan_batch};
use uuid::Uuid;

fn orders(n: usize) -> Vec<(Uuid, NewOrder, Option<String>)> {
    (0..n)
        .map(|i| {
            let items = vec![ItemRequest {
                product_id: 1 + (i % 100) as i64,
                quantity: 1 + (i % 3) as i64,
            }];
            (
                Uuid::now_v7(),
                NewOrder::new(items).unwrap(),
                (i % 4 == 0).then(|| format!("key-{i}")),
            )
        })
        .collect()
}

fn group_commit(c: &mut Criterion) {
    let prices: Prices = (1..=100).map(|id| (id, (100 * id, false))).collect();
    let owner = Owner {
        issuer: "https://issuer.example/realms/shop".into(),
        subject: "5f0c2b1e-8d4a-4c3e-9b7a-2f6e1d0c9a8b".into(),
    };
    let mut group = c.benchmark_group("group_commit");
    for n in [1, 10, 100, 256] {
        let batch = orders(n);
        group.bench_with_input(
            BenchmarkId::new("lay out and answer", n),
            &batch,
            |b, batch| {
                b.iter(|| {
                    let requests = || {
                        batch.iter().map(|(id, order, key)| Request {
                            id: *id,
                            order,
                            key: key.as_deref(),
                            owner: &owner,
                        })
                    };
                    let columns = BatchColumns::of(requests()).unwrap();
                    let events = columns.event_columns();
                    let plan = plan_batch(requests(), &prices);
                    columns.ids().len() + events.ids.len() + plan.priced.len()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
