//! A service's database for one test, made as an operator makes one
//! (`outbox provision postgres`): the service's owner and runtime roles,
//! the database owned by the owner, reached by those two only. The test's
//! own connections (reading invariants, ending sessions) use the server's
//! administrator, as an operator's tools would.

use platform::db::{Provision, Roles};

/// The three URLs of one test database.
#[derive(Debug, Clone)]
pub struct ServiceDatabase {
    /// As the test server's administrator (`TEST_DATABASE_URL`'s role).
    pub admin: String,
    /// As the service's owner role: `<SERVICE>_DATABASE_OWNER_URL`.
    pub owner: String,
    /// As the service's runtime role: `<SERVICE>_DATABASE_URL`.
    pub runtime: String,
}

impl ServiceDatabase {
    /// Makes database `name` for `service` on `server` (a URL whose
    /// database part is replaced; `TEST_DATABASE_URL`'s server when
    /// `None`), with the service's roles. On a server that checks
    /// passwords, `TEST_ROLE_PASSWORD` is set as both roles' password and
    /// put in their URLs (the roles are the server's: a stack of `make up`
    /// on the same server shares them).
    pub async fn provision(server: Option<&str>, service: &str, name: &str) -> Self {
        let admin = match server {
            Some(server) => crate::with_database(server, name),
            None => crate::database_url(name),
        };
        let maintenance = match server {
            Some(server) => crate::with_database(server, "postgres"),
            None => crate::database_url("postgres"),
        };
        let config = platform::db::parse_url("test server", &maintenance).unwrap();
        let password = std::env::var("TEST_ROLE_PASSWORD")
            .ok()
            .filter(|password| !password.is_empty());
        platform::db::provision(
            &config,
            &Provision {
                service,
                database: name,
                owner_password: password.as_deref(),
                runtime_password: password.as_deref(),
            },
        )
        .await
        .unwrap_or_else(|error| panic!("provisioning {name} for {service}: {error}"));
        let roles = Roles::of(service);
        let user = |role: &str| match &password {
            Some(password) => with_user(&admin, &format!("{role}:{}", encode(password))),
            None => with_user(&admin, role),
        };
        ServiceDatabase {
            owner: user(&roles.owner),
            runtime: user(&roles.runtime),
            admin,
        }
    }

    /// The administrator's connection settings.
    pub fn admin_config(&self) -> tokio_postgres::Config {
        platform::db::parse_url("test database", &self.admin).unwrap()
    }
}

/// `text` percent-encoded for a URL's user information.
pub(crate) fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// `url` with `user` (and no password, unless `user` is `name:password`)
/// as its user.
pub fn with_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    format!("{scheme}://{user}@{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_user_keeps_the_hosts_and_attributes() {
        assert_eq!(
            with_user(
                "postgres://postgres:pw@127.0.0.1:5441,127.0.0.1:5442/o?target_session_attrs=read-write",
                "order_runtime"
            ),
            "postgres://order_runtime@127.0.0.1:5441,127.0.0.1:5442/o?target_session_attrs=read-write"
        );
        assert_eq!(
            with_user("postgres://127.0.0.1/o", "u"),
            "postgres://u@127.0.0.1/o"
        );
        assert_eq!(encode("p@ss w:rd"), "p%40ss%20w%3Ard");
    }
}
