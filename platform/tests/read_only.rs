//! A server that stops taking writes under a pool's connections (a
//! primary demoted in a failover): the refusal is transient, and the
//! connections opened before it are not handed out again.

use tokio_postgres::error::SqlState;

async fn backend_pid(pool: &deadpool_postgres::Pool) -> i32 {
    let client = pool.get().await.expect("a pooled connection");
    client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0)
}

#[tokio::test]
async fn a_read_only_refusal_retires_the_connections_opened_before_it() {
    let url = testkit::database_url("postgres");
    let config = platform::db::parse_url("TEST_DATABASE_URL", &url).unwrap();
    let pool = platform::db::pool(&config, 1).unwrap();
    let first = backend_pid(&pool).await;
    assert_eq!(
        backend_pid(&pool).await,
        first,
        "the pool reuses its connection"
    );

    {
        let client = pool.get().await.unwrap();
        // What a demoted primary answers every write with.
        client
            .batch_execute("SET default_transaction_read_only = on")
            .await
            .unwrap();
        let error = client
            .batch_execute("CREATE TABLE read_only_probe (id int)")
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some(&SqlState::READ_ONLY_SQL_TRANSACTION));
        assert!(platform::db::is_transient(&error), "{error}");
    }

    let next = backend_pid(&pool).await;
    assert_ne!(
        next, first,
        "the connection of the read-only server was handed out again"
    );
    assert_eq!(backend_pid(&pool).await, next, "a new connection is kept");
}

#[tokio::test]
async fn readiness_learns_which_server_answered() {
    let url = testkit::database_url("postgres");
    let config = platform::db::parse_url("TEST_DATABASE_URL", &url).unwrap();
    let pool = platform::db::pool(&config, 1).unwrap();
    let server = platform::db::reach(&pool)
        .await
        .expect("the test server answers");
    let expected = testkit::server_addr(&url);
    assert_eq!(server.address, expected.to_string());
    assert_eq!(server.database, "postgres");
    assert!(!server.in_recovery);
    assert_eq!(server.to_string(), format!("{expected}/postgres"));
}
