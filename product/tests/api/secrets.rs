//! No secret leaves the service: with a password planted in each URL
//! (PostgreSQL's, accepted here, since local connections are trusted;
//! RabbitMQ's and Redis's, refused by their servers, so the service logs
//! and reports failures that name them), the password is in none of its
//! log lines at trace level, its readiness, its metrics, or its answers.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PLANTED: &str = "Pl4nted-s3cret-9f2c";

#[tokio::test]
async fn a_planted_password_appears_in_no_log_readiness_metrics_or_answer() {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let database = testkit::database_url(&format!("product_secret_{id}")).replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{PLANTED}@"),
        1,
    );
    assert!(
        database.contains(PLANTED),
        "the test URL has a user part: {database}"
    );
    let issuer = testkit::issuer::issuer();
    let port = free_port();
    let admin = free_port();
    // A file, not a pipe: at trace level the service writes faster than
    // anyone reads, and a full pipe would stop it.
    let log_path = std::env::temp_dir().join(format!("product-secret-{id}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut service = Command::new(env!("CARGO_BIN_EXE_product"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PRODUCT_DATABASE_URL", &database)
        .env(
            "REDIS_URL",
            format!("redis://intruder:{PLANTED}@127.0.0.1:6379"),
        )
        .env(
            "AMQP_URL",
            format!("amqp://guest:{PLANTED}@127.0.0.1:5672/%2f"),
        )
        .env("AMQP_NAMESPACE", format!("test.{}.", &id[..12]))
        .env("PRODUCT_HOST", "127.0.0.1")
        .env("PRODUCT_PORT", port.to_string())
        .env("PRODUCT_ADMIN_PORT", admin.to_string())
        .env("RUST_LOG", "trace")
        .env("LOG_FORMAT", "json")
        .envs(issuer.settings())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("the product binary starts");

    let client = reqwest::Client::new();
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut answered = false;
    while Instant::now() < deadline {
        if let Ok(response) = client
            .get(format!("http://127.0.0.1:{admin}/readyz"))
            .send()
            .await
        {
            seen += &response.text().await.unwrap_or_default();
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if answered {
        // Let the broker's and Redis's refusals be retried and logged.
        tokio::time::sleep(Duration::from_secs(2)).await;
        for url in [
            format!("http://127.0.0.1:{admin}/readyz"),
            format!("http://127.0.0.1:{admin}/metrics"),
            format!("http://127.0.0.1:{port}/products/1"),
            format!("http://127.0.0.1:{port}/products?limit=x"),
        ] {
            if let Ok(response) = client.get(&url).send().await {
                seen += &response.text().await.unwrap_or_default();
            }
        }
        let write = client
            .post(format!("http://127.0.0.1:{port}/products"))
            .bearer_auth(issuer.token("admin", "catalog.write"))
            .json(&serde_json::json!({"name": "n", "price": 1, "stock": 1}))
            .send()
            .await;
        if let Ok(response) = write {
            seen += &response.text().await.unwrap_or_default();
        }
    }
    let _ = service.kill();
    let _ = service.wait();
    let mut logs = String::new();
    std::fs::File::open(&log_path)
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    let _ = std::fs::remove_file(&log_path);
    let database = platform::db::parse_url("test database", &database).unwrap();
    platform::db::drop_database(&database).await.unwrap();

    assert!(
        logs.lines().count() > 20,
        "the service logged at trace level:\n{logs}"
    );
    for (what, text) in [("its logs", &logs), ("its answers", &seen)] {
        let leaks: Vec<&str> = text.lines().filter(|line| line.contains(PLANTED)).collect();
        assert!(
            leaks.is_empty(),
            "the password is in {what}:\n{}",
            leaks.join("\n")
        );
    }
    assert!(answered, "the service never answered /readyz:\n{logs}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
