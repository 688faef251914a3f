//! Connecting to RabbitMQ: named connections (visible in the management
//! UI), and URLs described for logs without their credentials.

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};

use crate::Result;

/// Longest a connection may take to open. A broker that accepts the TCP
/// connection but never finishes the AMQP handshake (seen here: RabbitMQ
/// out of file descriptors) must be an error to retry, not a wait forever.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a connection named after what uses it (`order relay`, …).
pub async fn connect(url: &str, name: &str) -> Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, properties)).await {
        Ok(connection) => Ok(connection?),
        Err(_) => Err(crate::Error::Unavailable(format!(
            "no AMQP handshake from {} within {CONNECT_TIMEOUT:?}",
            describe(url)
        ))),
    }
}

/// `host:port/vhost` of an AMQP URL, without user or password.
pub fn describe(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.split('?').next().unwrap_or(rest).to_owned()
}

/// A broker URL that keeps its credentials out of `{:?}`: configurations
/// holding it can be logged whole. It reads as the full URL (`&str`).
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl(String);

impl BrokerUrl {
    pub fn new(url: &str) -> Self {
        BrokerUrl(url.to_owned())
    }
}

impl std::ops::Deref for BrokerUrl {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", describe(&self.0))
    }
}

/// Checks that a setting holds an AMQP URL; the error names the setting.
pub fn parse_url(name: &str, url: &str) -> Result<String, service::config::ConfigError> {
    url.parse::<lapin::uri::AMQPUri>()
        .map(|_| url.to_owned())
        .map_err(|reason| service::config::ConfigError::Invalid {
            name: name.to_owned(),
            expected: "an amqp:// URL",
            reason,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_leave_out_credentials() {
        assert_eq!(
            describe("amqp://guest:secret@rabbit:5672/%2f"),
            "rabbit:5672/%2f"
        );
        assert_eq!(describe("amqp://localhost"), "localhost");
    }

    #[test]
    fn configurations_print_their_broker_without_its_password() {
        let config =
            crate::relay::RelayConfig::new("amqp://guest:secret@rabbit:5672/%2f", "orders");
        let printed = format!("{config:?}");
        assert!(!printed.contains("secret"), "{printed}");
        assert!(printed.contains("rabbit:5672"), "{printed}");
        assert_eq!(&*config.amqp_url, "amqp://guest:secret@rabbit:5672/%2f");
    }

    #[test]
    fn bad_urls_are_refused_by_setting_name() {
        let error = parse_url("AMQP_URL", "http://nope").unwrap_err();
        assert!(error.to_string().starts_with("AMQP_URL is not valid"));
        assert!(parse_url("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f").is_ok());
    }
}
