//! Least privilege in the databases: each service's runtime role reads
//! and writes its tables and can change nothing else; the roles of one
//! service cannot reach the other's database; and a database the server's
//! superuser made before there were roles is handed to its owner.

use std::time::Duration;

use outbox::partitions::{Slicing, Table};
use serde_json::json;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::helpers::spawn_pipeline;

/// `database` reached as `role` instead of the administrator.
fn as_role(database: &tokio_postgres::Config, role: &str) -> tokio_postgres::Config {
    let mut config = database.clone();
    config.user(role);
    config
}

/// The SQLSTATE a statement (or the connection) failed with, or `None`
/// when it went through.
async fn refusal(database: &tokio_postgres::Config, statement: &str) -> Option<SqlState> {
    let client = match platform::db::connect(database).await {
        Ok(client) => client,
        Err(platform::db::DbError::Postgres { source, .. }) => return source.code().cloned(),
        Err(error) => panic!("{error}"),
    };
    match client.batch_execute(statement).await {
        Ok(()) => None,
        Err(error) => Some(error.code().cloned().unwrap_or(SqlState::INTERNAL_ERROR)),
    }
}

#[tokio::test]
async fn the_runtime_role_reads_and_writes_its_tables_and_can_change_nothing_else() {
    let mut pipeline = spawn_pipeline().await;
    // The whole loop runs as the runtime roles.
    let product = pipeline.create_product("Granted", 100, 5).await;
    let (status, body) = pipeline
        .place(json!({"product_id": product, "quantity": 2}))
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(pipeline.wait_until_decided(Duration::from_secs(20)).await);

    let runtime = as_role(&pipeline.order_database, "order_runtime");
    assert_eq!(refusal(&runtime, "SELECT count(*) FROM orders").await, None);
    for statement in [
        "DROP TABLE orders",
        "ALTER TABLE orders ADD COLUMN extra int",
        "TRUNCATE orders",
        "DELETE FROM orders",
        "DELETE FROM order_items",
        "DROP TABLE outbox",
        "TRUNCATE outbox",
        "DELETE FROM outbox",
        "UPDATE outbox SET payload = '{}'",
        "DELETE FROM inbox_untimed",
        "SELECT * FROM refinery_schema_history",
        "CREATE TABLE planted (x int)",
        "CREATE TEMP TABLE planted (x int)",
        "CREATE FUNCTION planted() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    ] {
        assert_eq!(
            refusal(&runtime, statement).await,
            Some(SqlState::INSUFFICIENT_PRIVILEGE),
            "{statement}"
        );
    }

    // Each service's roles reach its own database only.
    for (database, strangers) in [
        (
            &pipeline.order_database,
            ["product_runtime", "product_owner"],
        ),
        (&pipeline.product_database, ["order_runtime", "order_owner"]),
    ] {
        for role in strangers {
            assert_eq!(
                refusal(&as_role(database, role), "SELECT 1").await,
                Some(SqlState::INSUFFICIENT_PRIVILEGE),
                "{role} reached {:?}",
                database.get_dbname()
            );
        }
    }

    // Neither role may make databases or roles, or is a superuser.
    let owner = as_role(&pipeline.order_database, "order_owner");
    assert_eq!(
        refusal(&owner, "CREATE DATABASE planted").await,
        Some(SqlState::INSUFFICIENT_PRIVILEGE)
    );
    let privileged: i64 = pipeline
        .stores
        .orders
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE ANY (ARRAY['order\\_%', 'product\\_%']) \
             AND (rolsuper OR rolcreatedb OR rolcreaterole OR rolreplication OR rolbypassrls)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(privileged, 0);
    pipeline.stop().await;
}

#[tokio::test]
async fn a_database_the_superuser_made_is_handed_to_the_owner_and_served_by_the_roles() {
    platform::telemetry::init_for_tests();
    let name = format!("order_upgrade_{}", Uuid::new_v4().simple());
    // As before there were roles: the superuser made and migrated it, and
    // made its partitions.
    let admin = platform::db::parse_url("test", &testkit::database_url(&name)).unwrap();
    platform::db::ensure_exists(&admin).await.unwrap();
    let migrations =
        outbox::schema::with_service(order::migrations::runner(), order::store::GRANTS);
    platform::db::migrate(&admin, &migrations, None)
        .await
        .unwrap();
    let client = platform::db::connect(&admin).await.unwrap();
    let slicing = Slicing::for_retention(Duration::from_secs(3600));
    let made = outbox::partitions::make_ahead(&client, Table::Outbox, &slicing)
        .await
        .unwrap();
    assert!(!made.is_empty());

    let database = testkit::ServiceDatabase::provision(None, "order", &name).await;
    let not_the_owners: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace \
                 AND relowner <> 'order_owner'::regrole) \
             + (SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace \
                 AND proowner <> 'order_owner'::regrole)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(not_the_owners, 0, "objects left to their old owner");

    // The owner migrates (the views are replaced: it owns them) and grants.
    let owner = platform::db::parse_url("owner", &database.owner).unwrap();
    platform::db::migrate(&owner, &migrations, Some("order_runtime"))
        .await
        .unwrap();
    let made = outbox::partitions::make_ahead(
        &platform::db::connect(&owner).await.unwrap(),
        Table::Outbox,
        &Slicing::for_retention(Duration::from_secs(24 * 3600)),
    )
    .await
    .unwrap();
    assert!(!made.is_empty(), "the owner makes partitions too");
    // The runtime role writes an event (the id from the granted sequence)
    // into a partition the superuser made.
    let runtime = platform::db::parse_url("runtime", &database.runtime).unwrap();
    assert_eq!(
        refusal(
            &runtime,
            "INSERT INTO outbox (message_id, aggregate_id, partition, event_type, payload) \
             VALUES (gen_random_uuid(), 'upgrade', 0, 'order.created', '{}')"
        )
        .await,
        None
    );
    // A privilege the code does not name (given by hand, say) goes at the
    // next start; the ones it names stay.
    client
        .batch_execute("GRANT DELETE, TRUNCATE ON orders TO order_runtime")
        .await
        .unwrap();
    assert_eq!(refusal(&runtime, "DELETE FROM orders").await, None);
    platform::db::migrate(&owner, &migrations, Some("order_runtime"))
        .await
        .unwrap();
    assert_eq!(
        refusal(&runtime, "DELETE FROM orders").await,
        Some(SqlState::INSUFFICIENT_PRIVILEGE)
    );
    assert_eq!(refusal(&runtime, "SELECT count(*) FROM orders").await, None);
    drop(client);
    platform::db::drop_database(&admin).await.unwrap();
}
