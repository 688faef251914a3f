//! What the integration tests of every crate share. Never a dependency of
//! a binary: only `[dev-dependencies]` name it.
//!
//! # Layout
//! - [`proxy`]: a TCP proxy in front of PostgreSQL or RabbitMQ that cuts
//!   or freezes its connections on demand: a server failing mid-request,
//!   without touching the shared server.
//! - [`databases`]: a service's database made as an operator makes one,
//!   with its owner and runtime roles.
//! - [`pg_cluster`]: the Patroni cluster's URL, for the tests that need
//!   one, and its script.
//! - [`issuer`]: the issuer the services under test trust, its tokens
//!   and a client that sends one; an RSA key pair for RS256 tokens.
//! - [`jwks`]: an issuer's JWKS endpoint that rotates keys and goes away.
//! - [`env_or`] and the default URLs of the local test servers.
//! - [`ANALYZE_SAMPLE_ROWS_SQL`]: how much of a table an `ANALYZE` reads.

pub mod databases;
pub mod issuer;
pub mod jwks;
pub mod pg_cluster;
pub mod proxy;

pub use databases::ServiceDatabase;
pub use proxy::Proxy;

/// How many rows an `ANALYZE` of table `$1` (its name, as text) samples:
/// 300 per point of the largest statistics target among its columns, the
/// server's `default_statistics_target` for a column without its own (-1,
/// or NULL from PostgreSQL 17 on). One row, one `bigint`. On a table of
/// millions each sampled row is mostly a page read back from disk.
pub const ANALYZE_SAMPLE_ROWS_SQL: &str = "\
    SELECT 300 * max(CASE WHEN COALESCE(a.attstattarget, -1) < 0 \
        THEN current_setting('default_statistics_target')::int \
        ELSE a.attstattarget END)::bigint \
    FROM pg_attribute a \
    WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped";

/// A setting from the environment, or `default`.
pub fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

/// The broker the tests use (`AMQP_URL`, default the local RabbitMQ).
pub fn amqp_url() -> String {
    env_or("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
}

/// The Redis the tests use (`REDIS_URL`, default the local one).
pub fn redis_url() -> String {
    env_or("REDIS_URL", "redis://127.0.0.1:6379")
}

/// `url` (a `redis://` URL of the test server) as `user` with `password`.
pub fn redis_url_as(url: &str, user: &str, password: &str) -> String {
    databases::with_user(url, &format!("{user}:{}", databases::encode(password)))
}

/// The server address of a `postgres://` or `amqp://` URL.
pub fn server_addr(url: &str) -> std::net::SocketAddr {
    use std::net::ToSocketAddrs;
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    let host_port = rest.split(['/', '?']).next().unwrap_or(rest);
    let default_port = if url.starts_with("amqp") { 5672 } else { 5432 };
    let with_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:{default_port}")
    };
    with_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .unwrap_or_else(|| panic!("{with_port} does not resolve"))
}

/// A URL of database `name` on the test PostgreSQL server
/// (`TEST_DATABASE_URL` names the server; its database part is replaced,
/// every host and attribute of a multi-host URL kept).
pub fn database_url(name: &str) -> String {
    let base = env_or(
        "TEST_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    with_database(&base, name)
}

/// `url` naming database `name` instead of its own.
pub fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let query = path
        .split_once('?')
        .map(|(_, query)| format!("?{query}"))
        .unwrap_or_default();
    format!("{scheme}://{authority}/{name}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redis_url_takes_a_user() {
        assert_eq!(
            redis_url_as("redis://127.0.0.1:6379", "u", "p"),
            "redis://u:p@127.0.0.1:6379"
        );
        assert_eq!(
            redis_url_as("redis://old:pw@h:1/2", "u", "p"),
            "redis://u:p@h:1/2"
        );
    }

    #[test]
    fn another_database_keeps_the_hosts_and_attributes() {
        assert_eq!(
            with_database(
                "postgres://postgres@127.0.0.1:5441,127.0.0.1:5442/orders?target_session_attrs=read-write",
                "products"
            ),
            "postgres://postgres@127.0.0.1:5441,127.0.0.1:5442/products?target_session_attrs=read-write"
        );
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t"),
            "postgres://postgres@127.0.0.1:5432/t"
        );
    }
}
