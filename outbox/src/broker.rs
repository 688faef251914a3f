//! Connecting to RabbitMQ: named connections (visible in the management
//! UI), failover across the nodes of a cluster, and URLs described for logs
//! without their credentials.
//!
//! `AMQP_URL` holds one URL or several, separated by commas (the nodes of
//! a cluster). A connection goes to the first of them that answers,
//! starting from the one this process last connected to, and wrapping
//! around; whoever holds a connection that drops connects again the same
//! way, so a node that is gone is passed over for the next.
//!
//! lapin bounds none of its requests: a broker that answers the handshake
//! and then sits on a request would hold its caller forever. Everything
//! here is bounded: the handshake, the setup after it ([`open`]) and the
//! close.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use lapin::{Channel, Connection, ConnectionProperties};

use crate::Result;

/// Longest a connection may take to open. A broker that accepts the TCP
/// connection but never finishes the AMQP handshake (seen here: RabbitMQ
/// out of file descriptors) must be an error to retry, not a wait forever.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest the setup after the handshake may take: the channel, the
/// topology's declarations, qos, the subscription. RabbitMQ answers these
/// in milliseconds; one that sits on them is left for a new connection
/// (unbounded, this wait was the one place where a consumer could stay
/// unsubscribed without end, as one did after a broker restart in `make
/// chaos`: docs/RELIABILITY.md).
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(15);

/// Longest a close may wait for the broker's Close-Ok.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where in each list this process connected last: connections after a
/// failover go to the node that answered, not back to a dead first one.
static LAST_ANSWERED: LazyLock<Mutex<HashMap<String, usize>>> = LazyLock::new(Default::default);

/// The node each named connection of this process went to last, for
/// `/readyz` (which node a relay or consumer is on after a failover).
static CONNECTIONS: LazyLock<Mutex<BTreeMap<String, String>>> = LazyLock::new(Default::default);

/// Each named connection of this process and the node (`host:port/vhost`)
/// it last connected to, by name.
pub fn connections() -> Vec<(String, String)> {
    let connections = CONNECTIONS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    connections
        .iter()
        .map(|(name, node)| (name.clone(), node.clone()))
        .collect()
}

fn last_answered(list: &str) -> usize {
    let last = LAST_ANSWERED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    last.get(list).copied().unwrap_or(0)
}

fn answered(list: &str, index: usize) {
    let mut last = LAST_ANSWERED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    last.insert(list.to_owned(), index);
}

/// The URLs of a broker list, in order.
pub fn urls(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .collect()
}

/// Opens a connection named after what uses it (`order relay`, …) to the
/// first broker of `list` that answers (see the module's docs).
pub async fn connect(list: &str, name: &str) -> Result<Connection> {
    let urls = urls(list);
    if urls.is_empty() {
        return Err(crate::Error::Unavailable("no broker URL given".into()));
    }
    let start = last_answered(list) % urls.len();
    let mut failures = Vec::new();
    for index in (start..urls.len()).chain(0..start) {
        let url = urls[index];
        match connect_to(url, name).await {
            Ok(connection) => {
                answered(list, index);
                CONNECTIONS
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .insert(name.to_owned(), describe_one(url));
                if !failures.is_empty() {
                    tracing::warn!(connection = name, broker = %describe(url), passed_over = %failures.join("; "), "connected to the next broker of the list");
                }
                return Ok(connection);
            }
            Err(error) => failures.push(format!("{}: {error}", describe(url))),
        }
    }
    Err(crate::Error::Unavailable(format!(
        "no broker answered ({})",
        failures.join("; ")
    )))
}

async fn connect_to(url: &str, name: &str) -> Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, properties)).await {
        Ok(connection) => Ok(connection?),
        Err(_) => Err(crate::Error::Unavailable(format!(
            "no AMQP handshake within {CONNECT_TIMEOUT:?}"
        ))),
    }
}

/// Connects (see [`connect`]), opens a channel and lets `prepare` set it
/// up (declarations, qos, confirms, a subscription), all of it within
/// `limit` after the handshake; on failure or timeout the connection is
/// closed and the error returned.
pub async fn open<T, F, Fut>(
    list: &str,
    name: &str,
    limit: Duration,
    prepare: F,
) -> Result<(Connection, Channel, T)>
where
    F: FnOnce(Channel) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let connection = connect(list, name).await?;
    let setup = async {
        let channel = connection.create_channel().await?;
        let prepared = prepare(channel.clone()).await?;
        Ok((channel, prepared))
    };
    match tokio::time::timeout(limit, setup).await {
        Ok(Ok((channel, prepared))) => Ok((connection, channel, prepared)),
        Ok(Err(error)) => {
            close(&connection, "setup failed").await;
            Err(error)
        }
        Err(_) => {
            close(&connection, "setup timed out").await;
            Err(crate::Error::Unavailable(format!(
                "{name}: the broker did not finish the channel's setup within {limit:?}"
            )))
        }
    }
}

/// Closes a connection, waiting a bounded time for the broker's answer (a
/// connection already broken closes at once).
pub async fn close(connection: &Connection, reason: &str) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, reason.into())).await;
}

/// `host:port/vhost` of each AMQP URL of a list, without user or password.
pub fn describe(list: &str) -> String {
    urls(list)
        .into_iter()
        .map(describe_one)
        .collect::<Vec<_>>()
        .join(",")
}

fn describe_one(url: &str) -> String {
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

/// Checks that a setting holds an AMQP URL, or several separated by
/// commas; the error names the setting.
pub fn parse_url(name: &str, list: &str) -> Result<String, platform::settings::ConfigError> {
    let invalid = |reason: String| platform::settings::ConfigError::Invalid {
        name: name.to_owned(),
        expected: "an amqp:// URL, or several separated by commas",
        reason,
    };
    let urls = urls(list);
    if urls.is_empty() {
        return Err(invalid("no URL".into()));
    }
    for url in urls {
        url.parse::<lapin::uri::AMQPUri>().map_err(&invalid)?;
    }
    Ok(list.to_owned())
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

    #[test]
    fn a_list_is_every_url_of_it_checked_and_described() {
        let list = "amqp://guest:a@rabbit-a:5681/%2f, amqp://guest:b@rabbit-b:5682/%2f";
        assert!(parse_url("AMQP_URL", list).is_ok());
        assert_eq!(describe(list), "rabbit-a:5681/%2f,rabbit-b:5682/%2f");
        let error = parse_url("AMQP_URL", "amqp://rabbit-a,http://rabbit-b").unwrap_err();
        assert!(
            error.to_string().starts_with("AMQP_URL is not valid"),
            "{error}"
        );
        assert!(parse_url("AMQP_URL", " , ").is_err());
    }
}
