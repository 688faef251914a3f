//! Replay: filters select the right rows, a dry run sends nothing, a
//! replay of N rows sends N, and the CLI refuses an unfiltered replay.

use std::process::Command;

use outbox::relay::Publisher;
use outbox::replay::{self, Filter};

use crate::helpers::{TestOutbox, amqp_url};

#[tokio::test]
async fn filters_select_rows_and_a_replay_of_n_rows_sends_n() {
    let outbox = TestOutbox::new().await;
    let events: Vec<(String, i64)> = (0..30).map(|i| (format!("agg-{}", i % 3), i)).collect();
    outbox.append(&events).await;
    let mut relay = outbox.relay(outbox.relay_config());
    assert_eq!(outbox.drain(&mut relay).await, 30);
    let queue = outbox.topology.order_created_queue();
    assert_eq!(outbox.take_events(&queue, 30).await.len(), 30);

    let client = platform::db::connect(&outbox.database).await.unwrap();
    let by_aggregate = Filter {
        aggregate_id: Some("agg-1".into()),
        ..Filter::default()
    };
    assert_eq!(replay::count(&client, &by_aggregate).await.unwrap(), 10);
    let by_ids = Filter {
        from_id: Some(5),
        to_id: Some(9),
        ..Filter::default()
    };
    assert_eq!(replay::count(&client, &by_ids).await.unwrap(), 5);
    let by_type = Filter {
        event_type: Some("other".into()),
        ..Filter::default()
    };
    assert_eq!(replay::count(&client, &by_type).await.unwrap(), 0);
    let future = Filter {
        since: Some(time::OffsetDateTime::now_utc() + time::Duration::hours(1)),
        ..Filter::default()
    };
    assert_eq!(replay::count(&client, &future).await.unwrap(), 0);

    let publisher = Publisher::connect(&amqp_url(), "test replay", None)
        .await
        .unwrap();
    let report = replay::replay(
        &client,
        &publisher,
        &outbox.topology.orders_exchange(),
        &by_aggregate,
        4,
        |_| {},
    )
    .await
    .unwrap();
    publisher.close().await;
    assert_eq!(report.sent, 10);
    let again = outbox.take_events(&queue, 10).await;
    assert_eq!(again.len(), 10);
    assert!(again.iter().all(|event| event.aggregate_id == "agg-1"));
    outbox.cleanup().await;
}

/// The `outbox` tool on this test's outbox and namespace.
pub(crate) fn outbox_command(outbox: &TestOutbox) -> Command {
    let url = testkit::database_url(outbox.database.get_dbname().unwrap());
    let mut command = Command::new(env!("CARGO_BIN_EXE_outbox"));
    command
        .env("OUTBOX_DATABASE_URL", url)
        .env("AMQP_URL", amqp_url())
        .env(
            "AMQP_NAMESPACE",
            outbox.topology.orders_exchange().trim_end_matches("orders"),
        )
        // As the test topology was declared: a declaration with other
        // arguments would be refused.
        .env("AMQP_QUEUE_EXPIRES_MS", "60000")
        .env("RUST_LOG", "warn");
    command
}

#[tokio::test]
async fn the_cli_dry_run_sends_nothing_and_an_unfiltered_replay_is_refused() {
    let outbox = TestOutbox::new().await;
    outbox.append(&[("a".into(), 1), ("b".into(), 2)]).await;

    let refused = outbox_command(&outbox)
        .args(["replay", "--exchange", "orders"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("refusing to replay the whole outbox")
    );

    let dry = outbox_command(&outbox)
        .args(["replay", "--exchange", "orders", "--all", "--dry-run"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(stdout.contains("2 rows match; nothing sent"), "{stdout}");
    assert!(
        outbox
            .take_events(&outbox.topology.order_created_queue(), 1)
            .await
            .is_empty()
    );

    let sent = outbox_command(&outbox)
        .args(["replay", "--exchange", "orders", "--aggregate", "b"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&sent.stdout).contains("replayed 1 rows"),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let events = outbox
        .take_events(&outbox.topology.order_created_queue(), 1)
        .await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].aggregate_id, "b");

    // A replay moves no relay's cursor: both rows are still the relay's to
    // send (the replayed one a second time, a duplicate for consumers).
    let stats = outbox_command(&outbox).args(["stats"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&stats.stdout);
    assert!(stdout.contains("pending rows:            2"), "{stdout}");
    outbox.cleanup().await;
}

#[tokio::test]
async fn a_replay_of_rows_older_than_the_consumers_inbox_window_takes_force() {
    let outbox = TestOutbox::new().await;
    outbox.append(&[("old".into(), 1), ("new".into(), 2)]).await;
    let mut relay = outbox.relay(outbox.relay_config());
    assert_eq!(outbox.drain(&mut relay).await, 2);
    let queue = outbox.topology.order_created_queue();
    assert_eq!(outbox.take_events(&queue, 2).await.len(), 2);
    let client = outbox.pool.get().await.unwrap();
    client
        .execute(
            "UPDATE outbox SET created_at = now() - interval '20 days' WHERE aggregate_id = 'old'",
            &[],
        )
        .await
        .unwrap();
    drop(client);
    let replay = |extra: &[&str]| {
        let mut command = outbox_command(&outbox);
        command
            .args(["replay", "--exchange", "orders", "--all"])
            .args(extra)
            .env("INBOX_RETENTION_HOURS", "336");
        command.output().unwrap()
    };

    let refused = replay(&[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 of them were created more than 336 hours ago"),
        "{stderr}"
    );
    assert!(
        outbox.take_events(&queue, 1).await.is_empty(),
        "a refused replay sent something"
    );

    let dry = replay(&["--dry-run"]);
    let stdout = String::from_utf8_lossy(&dry.stdout);
    assert!(stdout.contains("replaying them takes --force"), "{stdout}");

    let forced = replay(&["--force"]);
    let stdout = String::from_utf8_lossy(&forced.stdout);
    assert!(forced.status.success(), "{stdout}");
    assert!(stdout.contains("replayed 2 rows"), "{stdout}");
    assert_eq!(outbox.take_events(&queue, 2).await.len(), 2);
    outbox.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standalone_relay_reads_the_services_relay_settings() {
    let outbox = TestOutbox::new().await;
    // A RELAY_* setting the services refuse is refused here too.
    let mut bad = outbox_command(&outbox);
    bad.args(["relay", "--exchange", "orders"])
        .env("RELAY_LINGER_MS", "soon")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = bad.spawn().unwrap();
    let mut refused = None;
    for _ in 0..100 {
        if let Some(status) = child.try_wait().unwrap() {
            refused = Some(status);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let Some(status) = refused else {
        child.kill().unwrap();
        panic!("the standalone relay ignored a malformed RELAY_LINGER_MS");
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("RELAY_LINGER_MS is not valid"), "{stderr}");

    // With good settings it relays, lingering as configured, and serves
    // its metrics.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut good = outbox_command(&outbox);
    good.args(["relay", "--exchange", "orders"])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .env("RELAY_LINGER_MS", "20")
        .env("RELAY_POLL_INTERVAL_MS", "100");
    let mut child = good.spawn().unwrap();
    outbox.append(&[("a".into(), 1), ("b".into(), 2)]).await;
    // A process of its own: on a busy machine it may take a few seconds
    // to start and connect.
    let mut events = Vec::new();
    for _ in 0..10 {
        let missing = 2 - events.len();
        events.extend(
            outbox
                .take_events(&outbox.topology.order_created_queue(), missing)
                .await,
        );
        if events.len() >= 2 {
            break;
        }
    }
    // The gauges are read every two seconds: wait for them to catch up.
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = scrape(port).await;
        if metrics.contains("outbox_relay_published_events_total 2")
            && metrics.contains("outbox_pending 0")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(events.len(), 2);
    for line in [
        "HTTP/1.1 200 OK",
        "outbox_relay_published_events_total 2",
        "outbox_pending 0",
        "outbox_relay_publish_lag_seconds_count",
        "process_cpu_seconds_total",
    ] {
        assert!(metrics.contains(line), "{line} missing from {metrics}");
    }
    outbox.cleanup().await;
}

/// `GET /metrics` of a process on `port`: the whole answer, or "" when
/// nothing answers yet.
async fn scrape(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    let mut answer = String::new();
    if stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .is_ok()
    {
        let _ = stream.read_to_string(&mut answer).await;
    }
    answer
}
