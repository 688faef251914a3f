//! Building the group-commit statement: pricing N queued orders from the
//! replica, setting aside the unknown ones, encoding their `order.created`
//! events, and laying orders, items and events out as one array per column
//! (what the single placing statement receives). The writer pays this once
//! per batch, between its two round trips to PostgreSQL.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use order::domain::{ItemRequest, NewOrder};
use order::store::writer::{OrderColumns, Prices, created_events, plan_batch};
use outbox::writer::EventColumns;
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
    let mut group = c.benchmark_group("group_commit");
    for n in [1, 10, 100, 256] {
        let batch = orders(n);
        group.bench_with_input(
            BenchmarkId::new("plan and lay out", n),
            &batch,
            |b, batch| {
                b.iter(|| {
                    let plan = plan_batch(
                        batch
                            .iter()
                            .map(|(id, order, key)| (*id, order, key.as_deref())),
                        &prices,
                    );
                    let columns = OrderColumns::of(&plan.priced);
                    let events = created_events(&plan.priced).unwrap();
                    let event_columns = EventColumns::of(&events);
                    columns.ids.len() + event_columns.ids.len()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
