//! The may ↔ tokio hand-off: a coroutine spawning a trivial future on tokio
//! and parking until the answer wakes it. Every store call of a request
//! pays this once; it bounds how cheap a request can be.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http_api::bridge::Bridge;

fn bridge(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let bridge = Bridge::new(runtime.handle().clone(), 1024, Duration::from_secs(5));
    let mut group = c.benchmark_group("bridge");
    group.bench_function("thread to tokio and back", |b| {
        b.iter(|| bridge.run(async { 1 + 1 }).unwrap())
    });
    group.bench_function("coroutine to tokio and back, 1000 round trips", |b| {
        b.iter(|| {
            let bridge = bridge.clone();
            may::go!(move || {
                for _ in 0..1000 {
                    bridge.run(async { 1 + 1 }).unwrap();
                }
            })
            .join()
            .unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bridge);
criterion_main!(benches);
