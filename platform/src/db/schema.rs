//! Creating a service's database when it is absent (or dropping it, for
//! tests) and migrating it with refinery under an advisory lock, so
//! instances starting together do not race.
//!
//! A database holds the tables of more than one component (the outbox
//! library's, then the service's own), and each keeps its own history of
//! applied migrations: refinery applies no migration numbered below the
//! last one applied, so with one history for both, a migration the library
//! adds later would never run on a database the service had migrated.

use refinery::Runner;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config};

use super::roles::{Grant, apply_grants};
use super::{DbError, connect, describe};

/// One migration, as refinery reads it from a crate's `migrations`
/// folder (`refinery::embed_migrations!`) or a test builds it.
pub use refinery::Migration;

/// The history table of a service's own migrations (refinery's default).
pub const SERVICE_HISTORY: &str = "refinery_schema_history";

/// One component's migrations and the table recording which are applied.
#[derive(Debug, Clone)]
pub struct MigrationSet {
    pub history: &'static str,
    pub migrations: Vec<Migration>,
    /// SQL run first, under the migration lock: for a component that moved
    /// its history to a table of its own, the move.
    pub before: Option<&'static str>,
    /// SQL run after the set's migrations, every time, under the lock:
    /// objects made from the component's code rather than kept in a
    /// migration (each must be replaceable in place, `CREATE OR REPLACE`).
    pub after: Option<&'static str>,
    /// What the service's runtime role may do with the component's tables
    /// and sequences ([`super::roles`]): every table a migration makes
    /// that the runtime reads or writes is named here.
    pub grants: &'static [Grant],
}

impl MigrationSet {
    /// A service's own migrations, from the runner its
    /// `refinery::embed_migrations!` made, in [`SERVICE_HISTORY`].
    pub fn service(embedded: refinery::Runner, grants: &'static [Grant]) -> Self {
        MigrationSet {
            history: SERVICE_HISTORY,
            migrations: embedded.get_migrations().clone(),
            before: None,
            after: None,
            grants,
        }
    }
}

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
/// whether it was created. A database that exists is used as it is: its
/// role need not reach any other database nor be allowed to create one
/// (provisioned roles are not, [`super::roles`]).
pub async fn ensure_exists(config: &Config) -> Result<bool, DbError> {
    match connect(config).await {
        Ok(_) => return Ok(false),
        Err(DbError::Postgres { source, .. })
            if source.code() == Some(&SqlState::INVALID_CATALOG_NAME) => {}
        Err(error) => return Err(error),
    }
    let (name, maintenance, client) = maintenance(config).await?;
    let error_at = |source| DbError::Postgres {
        target: describe(&maintenance),
        source,
    };
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

/// Applies the migrations of each set, in order, that are not applied yet,
/// one instance at a time, then gives role `runtime` (when named and when
/// it exists) exactly the sets' grants. Returns how many migrations were
/// applied.
pub async fn migrate(
    config: &Config,
    sets: &[MigrationSet],
    runtime: Option<&str>,
) -> Result<usize, DbError> {
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
    let mut applied = 0;
    let mut outcome = Ok(());
    for set in sets {
        if let Some(before) = set.before {
            if let Err(source) = client.batch_execute(before).await {
                outcome = Err(error_at(source));
                break;
            }
        }
        match Runner::new(&set.migrations)
            .set_abort_divergent(true)
            .set_migration_table_name(set.history)
            .run_async(&mut client)
            .await
        {
            Ok(report) => applied += report.applied_migrations().len(),
            Err(error) => {
                outcome = Err(error.into());
                break;
            }
        }
        if let Some(after) = set.after {
            if let Err(source) = client.batch_execute(after).await {
                outcome = Err(error_at(source));
                break;
            }
        }
    }
    if let (Ok(()), Some(runtime)) = (&outcome, runtime) {
        let grants: Vec<Grant> = sets
            .iter()
            .flat_map(|set| set.grants.iter().copied())
            .collect();
        match apply_grants(&mut client, runtime, &grants).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                database = %describe(config),
                role = runtime,
                "PostgreSQL has no role {runtime}: no runtime grants made; every connection runs with \
                 its URL's role (docs/SECURITY.md: provision the roles)"
            ),
            Err(source) => outcome = Err(error_at(source)),
        }
    }
    // The lock also ends with the session; unlocking just releases it sooner.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    outcome?;
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
