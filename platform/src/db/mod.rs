//! A service's PostgreSQL database: created when absent, migrated with
//! refinery under an advisory lock (so instances starting together do not
//! race), and reached through a deadpool connection pool.
//!
//! A URL may list several hosts, as a Patroni cluster is reached
//! (`postgres://u@h1:5441,h2:5442,h3:5443/db?target_session_attrs=read-write`):
//! every connection, pooled or not, goes to the one that takes writes.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{Client, Config, NoTls};

use crate::settings::{ConfigError, Settings};

mod failure;
mod roles;
mod schema;
mod server;

pub use failure::{StoreError, explain, is_transient};
pub use roles::{Grant, Provision, Provisioned, Roles, provision};
pub use schema::{
    Migration, MigrationSet, SERVICE_HISTORY, drop_database, ensure_exists, migrate,
    quote_identifier,
};
pub use server::{Notices, Server, connect_watched};

/// What can go wrong preparing a database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("PostgreSQL at {target}: {}", explain(source))]
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

/// How long a connection attempt to one host may take when the URL sets
/// no `connect_timeout`: without one, a host that is down but not refusing
/// (its machine gone) stalls every reconnect for the kernel's TCP timeout,
/// minutes, before the next host of the URL is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Parses a `postgres://` URL setting, naming the setting on failure. A URL
/// without `connect_timeout` gets [`CONNECT_TIMEOUT`].
pub fn parse_url(name: &str, url: &str) -> Result<Config, ConfigError> {
    let mut config = Config::from_str(url).map_err(|error| ConfigError::Invalid {
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
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
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

/// `host:port/database` for logs, every host of a multi-host URL
/// (`h1:5441,h2:5442/orders`): never the user or password.
pub fn describe(config: &Config) -> String {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(index, host)| {
            let host = match host {
                tokio_postgres::config::Host::Tcp(host) => host.clone(),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            // One port for every host, or one each.
            let port = ports.get(index).or(ports.first()).copied().unwrap_or(5432);
            format!("{host}:{port}")
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "localhost:5432".to_owned()
    } else {
        hosts.join(",")
    };
    format!("{hosts}/{}", config.get_dbname().unwrap_or("?"))
}

/// A client and its connection, for the caller to drive; a failure names
/// where it tried.
async fn open(
    config: &Config,
) -> Result<
    (
        Client,
        tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
    ),
    DbError,
> {
    config
        .connect(NoTls)
        .await
        .map_err(|source| DbError::Postgres {
            target: describe(config),
            source,
        })
}

/// Connects one client outside any pool, driving its connection on tokio.
pub async fn connect(config: &Config) -> Result<Client, DbError> {
    let (client, connection) = open(config).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "database connection closed");
        }
    });
    Ok(client)
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
///
/// JIT compilation and parallel workers are off with it: a plan that must
/// scan a small table whole (a one-row cursor) carries the disabled scan's
/// huge cost, over `jit_above_cost` and worth parallel workers to the
/// planner; compiling took 80 to 200 ms of the server at each execution,
/// and starting workers 24 ms (measured on the relay's read of the
/// append-only outbox). Statements that run in a millisecond gain from
/// neither.
pub const KEYED_ACCESS: &[(&str, &str)] = &[
    ("enable_seqscan", "off"),
    ("jit", "off"),
    ("max_parallel_workers_per_gather", "0"),
];

/// A connection pool of at most `size` connections, each with
/// [`KEYED_ACCESS`]. A connection opened before any statement of the
/// process was refused for a read-only server (a primary demoted under
/// it) is dropped when it comes back, not handed out again: the next one
/// is opened to the server that takes writes now.
pub fn pool(config: &Config, size: usize) -> Result<Pool, DbError> {
    let config = with_session_settings(config.clone(), KEYED_ACCESS);
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
        .pre_recycle(Hook::sync_fn(|_, metrics| {
            if failure::opened_before_read_only(metrics.created) {
                Err(HookError::message("its server went read-only"))
            } else {
                Ok(())
            }
        }))
        .build()
        .map_err(|error| DbError::Pool(error.to_string()))
}

/// The server a connection of the pool reaches, if one answers.
pub async fn reach(pool: &Pool) -> Option<Server> {
    let client = pool.get().await.ok()?;
    Server::of(&client).await.ok()
}

/// A service's database as its settings give it: `<PREFIX>_DATABASE_URL`
/// (the runtime role's), `<PREFIX>_DATABASE_OWNER_URL` (the owner's; the
/// runtime URL when unset, one role doing both) and
/// `<PREFIX>_DATABASE_POOL_SIZE` (at least 2, default 16).
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// Where the database is, as the runtime role, its connections named
    /// after the service.
    pub config: Config,
    /// The same database as its owner, connections named `<service>
    /// upkeep`: migrations, partitions, retention, vacuum.
    pub owner: Config,
    pub pool_size: usize,
    /// The service's roles: the owner grants the runtime one its tables.
    pub roles: Roles,
}

/// A service's two pools: the runtime role's for everything it serves,
/// the owner's (two connections) for the upkeep.
#[derive(Clone)]
pub struct Pools {
    pub runtime: Pool,
    pub owner: Pool,
}

/// How many connections the owner's upkeep holds: partition upkeep and
/// vacuum run one at a time in one worker; the second is for the start.
const OWNER_POOL_SIZE: usize = 2;

impl DatabaseSettings {
    /// Reads the settings of service `name` (`order` reads `ORDER_…`).
    pub fn read(settings: &Settings<'_>, name: &str) -> Result<Self, ConfigError> {
        let prefix = name.to_ascii_uppercase();
        let url_name = format!("{prefix}_DATABASE_URL");
        let url = settings.required_secret(&url_name)?;
        let config = named(parse_url(&url_name, &url)?, name);
        let owner_name = format!("{prefix}_DATABASE_OWNER_URL");
        let owner = match settings.secret(&owner_name)? {
            Some(url) => {
                let owner = parse_url(&owner_name, &url)?;
                if owner.get_dbname() != config.get_dbname() {
                    return Err(ConfigError::Invalid {
                        name: owner_name,
                        expected: "a postgres:// URL of the same database",
                        reason: format!("it names another database than {url_name}"),
                    });
                }
                named(owner, &format!("{name} upkeep"))
            }
            None => config.clone(),
        };
        Ok(DatabaseSettings {
            config,
            owner,
            pool_size: settings.optional_in(
                &format!("{prefix}_DATABASE_POOL_SIZE"),
                "a connection count, at least 2",
                16usize,
                2..,
            )?,
            roles: Roles::of(name),
        })
    }

    /// As the owner: creates the database if it is absent (when the owner
    /// may), applies the migrations it lacks and grants the runtime role
    /// its tables; then opens both pools. Warns when the runtime
    /// connections would run as a superuser or as the owner.
    pub async fn prepare(&self, migrations: &[MigrationSet]) -> Result<Pools, DbError> {
        ensure_exists(&self.owner).await?;
        migrate(&self.owner, migrations, Some(&self.roles.runtime)).await?;
        let pools = Pools {
            runtime: pool(&self.config, self.pool_size)?,
            owner: pool(&self.owner, OWNER_POOL_SIZE)?,
        };
        if let Ok(client) = pools.runtime.get().await {
            warn_if_privileged(&client, &describe(&self.config)).await;
        }
        Ok(pools)
    }
}

/// Logs a warning at every start whose runtime connections could change
/// the schema: a superuser, or the role that owns the database.
async fn warn_if_privileged(client: &Client, database: &str) {
    let Ok(row) = client
        .query_one(
            "SELECT current_user::text, r.rolsuper, \
                 pg_has_role(current_user, d.datdba, 'MEMBER') \
             FROM pg_roles r, pg_database d \
             WHERE r.rolname = current_user AND d.datname = current_database()",
            &[],
        )
        .await
    else {
        return;
    };
    let (role, superuser, owner): (String, bool, bool) = (row.get(0), row.get(1), row.get(2));
    if superuser || owner {
        tracing::warn!(
            %database,
            %role,
            superuser,
            owner,
            "the service's requests run as a role that may change or drop its tables: \
             give them the runtime role (docs/SECURITY.md)"
        );
    }
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
    fn a_multi_host_url_keeps_every_host_and_its_attributes() {
        let config = parse_url(
            "DB",
            "postgres://postgres@127.0.0.1:5441,127.0.0.1:5442,127.0.0.1:5443/orders\
             ?target_session_attrs=read-write",
        )
        .unwrap();
        assert_eq!(
            describe(&config),
            "127.0.0.1:5441,127.0.0.1:5442,127.0.0.1:5443/orders"
        );
        assert_eq!(
            config.get_target_session_attrs(),
            tokio_postgres::config::TargetSessionAttrs::ReadWrite
        );
        // The maintenance connection (database creation) keeps them too.
        let mut maintenance = config.clone();
        maintenance.dbname("postgres");
        assert_eq!(maintenance.get_hosts().len(), 3);
        assert_eq!(
            maintenance.get_target_session_attrs(),
            tokio_postgres::config::TargetSessionAttrs::ReadWrite
        );
    }

    #[test]
    fn a_connect_timeout_is_set_unless_the_url_sets_one() {
        let default = parse_url("DB", "postgres://u@h/d").unwrap();
        assert_eq!(default.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        let own = parse_url("DB", "postgres://u@h/d?connect_timeout=7").unwrap();
        assert_eq!(own.get_connect_timeout(), Some(&Duration::from_secs(7)));
    }

    #[test]
    fn a_services_database_url_may_come_from_a_file() {
        let file = std::env::temp_dir().join(format!("db-url-{}", std::process::id()));
        std::fs::write(&file, "postgres://app:s3cr3t@db.internal:5433/orders\n").unwrap();
        let path = file.display().to_string();
        let source = vec![("ORDER_DATABASE_URL_FILE", path.as_str())];
        let settings = DatabaseSettings::read(&Settings::new(&source), "order").unwrap();
        assert_eq!(settings.config.get_password(), Some(&b"s3cr3t"[..]));
        assert_eq!(settings.config.get_dbname(), Some("orders"));
        std::fs::remove_file(file).unwrap();
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
        let config = with_session_settings(config, &[("statement_timeout", "5000")]);
        let config = with_session_settings(config, KEYED_ACCESS);
        assert_eq!(
            config.get_options(),
            Some(
                "-c search_path=x -c statement_timeout=5000 -c enable_seqscan=off -c jit=off \
                 -c max_parallel_workers_per_gather=0"
            )
        );
        let bare =
            with_session_settings(parse_url("DB", "postgres://u@h/d").unwrap(), KEYED_ACCESS);
        assert_eq!(
            bare.get_options(),
            Some("-c enable_seqscan=off -c jit=off -c max_parallel_workers_per_gather=0")
        );
    }

    #[test]
    fn the_owner_reaches_the_same_database_on_connections_of_its_own() {
        let both = vec![
            ("ORDER_DATABASE_URL", "postgres://order_runtime@h/orders"),
            (
                "ORDER_DATABASE_OWNER_URL",
                "postgres://order_owner@h/orders",
            ),
        ];
        let settings = DatabaseSettings::read(&Settings::new(&both), "order").unwrap();
        assert_eq!(settings.config.get_user(), Some("order_runtime"));
        assert_eq!(settings.owner.get_user(), Some("order_owner"));
        assert_eq!(settings.owner.get_application_name(), Some("order upkeep"));
        assert_eq!(settings.roles, Roles::of("order"));
        // Without an owner URL one role does both.
        let one = vec![("ORDER_DATABASE_URL", "postgres://postgres@h/orders")];
        let settings = DatabaseSettings::read(&Settings::new(&one), "order").unwrap();
        assert_eq!(settings.owner.get_user(), Some("postgres"));
        // An owner of another database is a mistake said at start.
        let other = vec![
            ("ORDER_DATABASE_URL", "postgres://order_runtime@h/orders"),
            (
                "ORDER_DATABASE_OWNER_URL",
                "postgres://order_owner@h/products",
            ),
        ];
        let error = DatabaseSettings::read(&Settings::new(&other), "order").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("ORDER_DATABASE_OWNER_URL is not valid"),
            "{error}"
        );
    }

    #[test]
    fn a_services_database_settings_carry_its_prefix_and_name() {
        let source = vec![
            ("ORDER_DATABASE_URL", "postgres://u@h/orders"),
            ("PRODUCT_DATABASE_URL", "postgres://u@h/products"),
            ("PRODUCT_DATABASE_POOL_SIZE", "1"),
        ];
        let settings = Settings::new(&source);
        let order = DatabaseSettings::read(&settings, "order").unwrap();
        assert_eq!(order.config.get_dbname(), Some("orders"));
        assert_eq!(order.config.get_application_name(), Some("order"));
        assert_eq!(order.pool_size, 16);
        let error = DatabaseSettings::read(&settings, "product").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("PRODUCT_DATABASE_POOL_SIZE is not valid"),
            "{error}"
        );
    }
}
