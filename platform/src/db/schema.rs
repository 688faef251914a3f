//! Creating a service's database when it is absent (or dropping it, for
//! tests) and migrating it with refinery under an advisory lock, so
//! instances starting together do not race.

use refinery::Runner;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config};

use super::{DbError, connect, describe};

/// One migration, as refinery reads it from a crate's `migrations`
/// folder (`refinery::embed_migrations!`) or a test builds it.
pub use refinery::Migration;

/// The database `config` names, and a connection to the server's
/// `postgres` database to create or drop it from.
async fn maintenance(config: &Config) -> Result<(String, Config, Client), DbError> {
    let name = config
        .get_dbname()
        .ok_or(DbError::NoDatabaseName)?
        .to_owned();
    let mut maintenance = config.clone();
    maintenance.dbname("postgres");
    let client = connect(&maintenance).await?;
    Ok((name, maintenance, client))
}

/// Creates the database `config` names if it does not exist yet. Returns
/// whether it was created.
pub async fn ensure_exists(config: &Config) -> Result<bool, DbError> {
    let (name, maintenance, client) = maintenance(config).await?;
    let error_at = |source| DbError::Postgres {
        target: describe(&maintenance),
        source,
    };
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(error_at)?
        .is_some();
    if exists {
        return Ok(false);
    }
    // CREATE DATABASE takes no parameters; the name is quoted as an identifier.
    let statement = format!("CREATE DATABASE {}", quote_identifier(&name));
    match client.batch_execute(&statement).await {
        Ok(()) => {
            tracing::info!(database = %describe(config), "created database");
            Ok(true)
        }
        // Another instance created it between our check and our create.
        Err(error) if error.code() == Some(&SqlState::DUPLICATE_DATABASE) => Ok(false),
        Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => Ok(false),
        Err(source) => Err(error_at(source)),
    }
}

/// Drops a database; tests use it to clean up after themselves.
pub async fn drop_database(config: &Config) -> Result<(), DbError> {
    let (name, maintenance, client) = maintenance(config).await?;
    let statement = format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_identifier(&name)
    );
    client
        .batch_execute(&statement)
        .await
        .map_err(|source| DbError::Postgres {
            target: describe(&maintenance),
            source,
        })
}

/// `"name"` with inner quotes doubled: safe for any database name.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Applies the migrations that are not applied yet, one instance at a time.
pub async fn migrate(config: &Config, migrations: &[Migration]) -> Result<usize, DbError> {
    let mut client = connect(config).await?;
    let error_at = |source| DbError::Postgres {
        target: describe(config),
        source,
    };
    // Any fixed key works: advisory locks are scoped to the database.
    const MIGRATION_LOCK: i64 = 0x006d_6967_7261_7465;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(error_at)?;
    let report = Runner::new(migrations)
        .set_abort_divergent(true)
        .run_async(&mut client)
        .await;
    // The lock also ends with the session; unlocking just releases it sooner.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    let applied = report?.applied_migrations().len();
    if applied > 0 {
        tracing::info!(database = %describe(config), applied, "migrations applied");
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier(r#"a"b"#), r#""a""b""#);
    }
}
