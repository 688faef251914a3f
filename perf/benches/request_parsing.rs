//! Request parsing and validation: the HTTP core decoding a pipelined
//! buffer of `POST /orders` requests, and an order body becoming a
//! validated `NewOrder`. This is the per-request CPU of the hot path before
//! any I/O.

use bytes::BytesMut;
use criterion::{Criterion, criterion_group, criterion_main};
use http_api::codec::{self, Decoded, Limits};

const REQUEST: &[u8] = b"POST /orders HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: k6/1.1.0\r\n\
Content-Type: application/json\r\nContent-Length: 33\r\nIdempotency-Key: 0193a0c4-7b3e\r\n\r\n\
{\"product_id\": 42, \"quantity\": 2}";

fn parsing(c: &mut Criterion) {
    let mut group = c.benchmark_group("request_parsing");
    group.bench_function("decode one POST /orders request", |b| {
        b.iter(|| {
            let mut buffer = BytesMut::from(REQUEST);
            match codec::decode(&mut buffer, &Limits::default()) {
                Decoded::Request(request) => request,
                other => panic!("{other:?}"),
            }
        })
    });
    let pipelined: Vec<u8> = REQUEST.repeat(16);
    group.bench_function("decode 16 pipelined requests", |b| {
        b.iter(|| {
            let mut buffer = BytesMut::from(&pipelined[..]);
            let mut decoded = 0;
            while let Decoded::Request(_) = codec::decode(&mut buffer, &Limits::default()) {
                decoded += 1;
            }
            decoded
        })
    });
    group.bench_function("validate a one-item order body", |b| {
        b.iter(|| order::domain::NewOrder::parse(br#"{"product_id": 42, "quantity": 2}"#).unwrap())
    });
    let items: Vec<String> = (1..=100)
        .map(|id| format!(r#"{{"product_id": {id}, "quantity": 3}}"#))
        .collect();
    let hundred = format!(r#"{{"items": [{}]}}"#, items.join(","));
    group.bench_function("validate a 100-item order body", |b| {
        b.iter(|| order::domain::NewOrder::parse(hundred.as_bytes()).unwrap())
    });
    group.finish();
}

criterion_group!(benches, parsing);
criterion_main!(benches);
