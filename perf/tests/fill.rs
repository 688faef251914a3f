//! `perf fill` against real databases: the grown state it leaves is one the
//! services could have reached by themselves.

use tokio_postgres::Config;
use uuid::Uuid;

/// A database of the test's own with `migrations` applied, and a client.
async fn database(kind: &str, migrations: &[platform::db::MigrationSet]) -> tokio_postgres::Client {
    let name = format!("perf_fill_{kind}_{}", Uuid::new_v4().simple());
    let config: Config =
        platform::db::parse_url("TEST_DATABASE_URL", &testkit::database_url(&name)).unwrap();
    platform::db::ensure_exists(&config).await.unwrap();
    platform::db::migrate(&config, migrations, None)
        .await
        .unwrap();
    platform::db::connect(&config).await.unwrap()
}

#[tokio::test]
async fn a_fill_moves_the_redrive_mark_up_to_the_first_pending_order() {
    let orders = database(
        "orders",
        &outbox::schema::with_service(order::migrations::runner(), order::store::GRANTS),
    )
    .await;
    let products = database(
        "products",
        &outbox::schema::with_service(product::migrations::runner(), product::store::GRANTS),
    )
    .await;
    // An order placed now and not decided yet: the filled ones, placed in
    // the days before, all sort below it.
    let pending = Uuid::now_v7();
    orders
        .execute(
            "INSERT INTO orders (id, status, total, fingerprint) VALUES ($1, 'PENDING', 100, '1x1')",
            &[&pending],
        )
        .await
        .unwrap();

    perf::fill::fill(&orders, &products, 1000, 0, 3)
        .await
        .unwrap();

    let low: Uuid = orders
        .query_one("SELECT low FROM order_redrive_cursor", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        low, pending,
        "the mark stops at the first pending order, past every filled one"
    );
    let below: i64 = orders
        .query_one("SELECT count(*) FROM orders WHERE id < $1", &[&pending])
        .await
        .unwrap()
        .get(0);
    assert_eq!(below, 1000, "the filled orders lie below the mark");
}
