//! A service's PostgreSQL database: created when absent, migrated with
//! refinery under an advisory lock (so instances starting together do not
//! race), and reached through a deadpool connection pool.

use std::str::FromStr;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use refinery::{Migration, Runner};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, NoTls};

use crate::config::ConfigError;

/// What can go wrong preparing a database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("PostgreSQL at {target}: {source}")]
    Postgres {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("migration failed: {0}")]
    Migration(#[from] refinery::Error),
    #[error("connection pool could not be built: {0}")]
    Pool(String),
    #[error("the database URL names no database")]
    NoDatabaseName,
}

/// One migration: refinery's `V<n>__<name>` naming and its SQL.
pub type MigrationSource = (&'static str, &'static str);

/// Parses a `postgres://` URL setting, naming the setting on failure.
pub fn parse_url(name: &str, url: &str) -> Result<Config, ConfigError> {
    let config = Config::from_str(url).map_err(|error| ConfigError::Invalid {
        name: name.to_owned(),
        expected: "a postgres:// URL",
        reason: error.to_string(),
    })?;
    if config.get_dbname().is_none() {
        return Err(ConfigError::Invalid {
            name: name.to_owned(),
            expected: "a postgres:// URL",
            reason: "it names no database".to_owned(),
        });
    }
    Ok(config)
}

/// Names a service's connections in `pg_stat_activity` (unless the URL
/// already names them), so an operator sees who holds what.
pub fn named(mut config: Config, application: &str) -> Config {
    if config.get_application_name().is_none() {
        config.application_name(application);
    }
    config
}

/// `host:port/database` for logs: never the user or password.
pub fn describe(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let database = config.get_dbname().unwrap_or("?");
    format!("{host}:{port}/{database}")
}

/// Connects one client outside any pool, driving its connection on tokio.
pub async fn connect(config: &Config) -> Result<Client, DbError> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|source| DbError::Postgres {
            target: describe(config),
            source,
        })?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "database connection closed");
        }
    });
    Ok(client)
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
pub async fn migrate(config: &Config, migrations: &[MigrationSource]) -> Result<usize, DbError> {
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
    let migrations = migrations
        .iter()
        .map(|(name, sql)| Migration::unapplied(name, sql))
        .collect::<Result<Vec<_>, _>>()?;
    let report = Runner::new(&migrations)
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

/// `config` with server settings for every session it opens
/// (`-c name=value` startup options, after any the URL already has): no
/// round trip per session, unlike `SET`.
pub fn with_session_settings(mut config: Config, settings: &[(&str, &str)]) -> Config {
    let added = settings
        .iter()
        .map(|(name, value)| format!("-c {name}={value}"))
        .collect::<Vec<_>>()
        .join(" ");
    let options = match config.get_options() {
        Some(existing) if !existing.is_empty() => format!("{existing} {added}"),
        _ => added,
    };
    config.options(&options);
    config
}

/// The services' sessions never scan a table whole: every statement they
/// run is keyed (an id, a partial index, a BRIN range). With sequential
/// scans off, a prepared statement's cached plan cannot be a scan made
/// while a table was nearly empty that stays once it is large (measured
/// earlier: 400 ms per mark-published batch at 80,000 rows instead of
/// 5 ms), so statements keep PostgreSQL's plan cache (generic plans once
/// they cost no more) instead of being planned at every execution, which
/// took more of the server's CPU than running them.
pub const KEYED_ACCESS: (&str, &str) = ("enable_seqscan", "off");

/// A connection pool of at most `size` connections, each with
/// [`KEYED_ACCESS`].
pub fn pool(config: &Config, size: usize) -> Result<Pool, DbError> {
    let config = with_session_settings(config.clone(), &[KEYED_ACCESS]);
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|error| DbError::Pool(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_leave_out_credentials() {
        let config = parse_url("DB", "postgres://alice:s3cret@db.example:6543/orders").unwrap();
        assert_eq!(describe(&config), "db.example:6543/orders");
    }

    #[test]
    fn a_url_without_a_database_is_refused_by_name() {
        let error = parse_url("ORDER_DATABASE_URL", "postgres://127.0.0.1").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("ORDER_DATABASE_URL is not valid")
        );
    }

    #[test]
    fn session_settings_follow_the_url_options() {
        let config = parse_url("DB", "postgres://u@h/d?options=-c%20search_path%3Dx").unwrap();
        let config = with_session_settings(config, &[("statement_timeout", "5000"), KEYED_ACCESS]);
        assert_eq!(
            config.get_options(),
            Some("-c search_path=x -c statement_timeout=5000 -c enable_seqscan=off")
        );
        let bare = with_session_settings(
            parse_url("DB", "postgres://u@h/d").unwrap(),
            &[KEYED_ACCESS],
        );
        assert_eq!(bare.get_options(), Some("-c enable_seqscan=off"));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_identifier(r#"a"b"#), r#""a""b""#);
    }
}
