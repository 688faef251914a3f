//! `perf hold-connections`: many connections held open (half idle, half
//! sending a head one byte at a time) while the service is asked for
//! `/healthz`: what slow clients cost everyone else.

use std::time::Duration;

use perf::report;

use crate::environment::metrics_text;

/// Holds `count` connections to the service at `url` while asking it for
/// `/healthz`; its memory is read from its admin listener at `admin_url`.
pub(crate) async fn hold_connections(
    url: &str,
    admin_url: &str,
    count: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    platform::tls::install_crypto_provider();
    let http = reqwest::Client::new();
    let rss = |text: &str| {
        report::value(text, "process_resident_memory_bytes", "").unwrap_or(0.0) / 1_048_576.0
    };
    let before = metrics_text(&http, admin_url).await?;
    let addr = url.trim_start_matches("http://").to_owned();
    let mut held = Vec::with_capacity(count);
    for n in 0..count {
        match tokio::net::TcpStream::connect(&addr).await {
            Ok(mut stream) => {
                if n % 2 == 1 {
                    // Slowloris: a request head that never ends.
                    stream
                        .write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
                        .await?;
                }
                held.push(stream);
            }
            Err(error) => {
                println!("connection {n} failed: {error}");
                break;
            }
        }
    }
    println!(
        "holding {} connections ({} idle, {} sending a head slowly)",
        held.len(),
        held.len().div_ceil(2),
        held.len() / 2
    );
    let started = std::time::Instant::now();
    let mut latencies = Vec::new();
    while started.elapsed() < Duration::from_secs(seconds) {
        for stream in held.iter_mut().skip(1).step_by(2).take(200) {
            let _ = stream.write_all(b"a").await;
        }
        let asked = std::time::Instant::now();
        let status = http.get(format!("{url}/healthz")).send().await?.status();
        anyhow::ensure!(
            status.is_success(),
            "healthz answered {status} while connections were held"
        );
        latencies.push(asked.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let during = metrics_text(&http, admin_url).await?;
    drop(held);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = metrics_text(&http, admin_url).await?;
    latencies.sort_by(f64::total_cmp);
    println!(
        "a request meanwhile: median {:.2} ms, worst {:.2} ms over {} requests",
        latencies[latencies.len() / 2],
        latencies.last().copied().unwrap_or(0.0),
        latencies.len()
    );
    println!(
        "service RSS: {:.0} MB before, {:.0} MB while holding, {:.0} MB after",
        rss(&before),
        rss(&during),
        rss(&after)
    );
    Ok(())
}
