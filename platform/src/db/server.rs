//! Which PostgreSQL server a connection reached, and the server's notices
//! on a connection whose caller must read them.
//!
//! A URL may list several hosts (`host1:port1,host2:port2` with
//! `target_session_attrs=read-write`, as a Patroni cluster is reached):
//! the driver connects to the first that takes writes and does not say
//! which, so the server is asked. And a commit whose wait for a
//! synchronous standby is cancelled succeeds with nothing but a warning
//! ("the transaction has already committed locally, but might not have
//! been replicated"), which the driver logs and drops unless its caller
//! reads the connection's messages itself: [`connect_watched`] does.

use std::fmt;
use std::sync::Mutex;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::error::{DbError as Notice, Severity};
use tokio_postgres::{AsyncMessage, Client, Config};

use super::DbError;

/// A server as one of its connections sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// `address:port` the server answered on (`local` over a Unix socket).
    pub address: String,
    pub database: String,
    /// When its postmaster started: a server restarted since is another
    /// one, whose processes may have the same ids.
    pub started: String,
    /// A standby (or a primary being demoted): it takes no writes.
    pub in_recovery: bool,
}

impl Server {
    /// Asks the server `client` is connected to who it is.
    pub async fn of(client: &Client) -> Result<Server, tokio_postgres::Error> {
        let rows = client
            .simple_query(
                "SELECT coalesce(host(inet_server_addr()) || ':' || inet_server_port(), 'local'), \
                 current_database(), pg_postmaster_start_time()::text, pg_is_in_recovery()::text",
            )
            .await?;
        let row = rows.iter().find_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(row),
            _ => None,
        });
        let field = |index| row.and_then(|row| row.get(index)).unwrap_or("?").to_owned();
        Ok(Server {
            address: field(0),
            database: field(1),
            started: field(2),
            in_recovery: field(3) == "true",
        })
    }

    /// The same server process tree as `other`: same address, not
    /// restarted in between.
    pub fn is(&self, other: &Server) -> bool {
        self.address == other.address && self.started == other.started
    }
}

impl fmt::Display for Server {
    /// `address:port/database`, and `(standby)` for a server in recovery.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.database)?;
        if self.in_recovery {
            write!(f, " (standby)")?;
        }
        Ok(())
    }
}

/// The notices a watched connection received, oldest first.
pub struct Notices(Mutex<mpsc::UnboundedReceiver<Notice>>);

impl Notices {
    /// Forgets every notice received so far.
    pub fn clear(&self) {
        let mut receiver = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while receiver.try_recv().is_ok() {}
    }

    /// The first warning received since the last [`Notices::clear`], if
    /// any, as its message and detail. The server sends a statement's
    /// notices before its result, so once a statement has returned, its
    /// warnings are here.
    pub fn warning(&self) -> Option<String> {
        let mut receiver = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut warning = None;
        while let Ok(notice) = receiver.try_recv() {
            if warning.is_none() && is_warning(&notice) {
                warning = Some(match notice.detail() {
                    Some(detail) => format!("{} ({detail})", notice.message()),
                    None => notice.message().to_owned(),
                });
            }
        }
        warning
    }
}

fn is_warning(notice: &Notice) -> bool {
    matches!(notice.parsed_severity(), Some(Severity::Warning))
        || notice.severity().eq_ignore_ascii_case("WARNING")
}

/// Connects one client outside any pool, like [`super::connect`], and
/// keeps the server's notices on it for the caller to read.
pub async fn connect_watched(config: &Config) -> Result<(Client, Notices), DbError> {
    let (client, mut connection) = super::open(config).await?;
    let (sender, receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notice(notice)) => {
                    tracing::debug!(notice = %notice.message(), "database notice");
                    let _ = sender.send(notice);
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, "database connection closed");
                    return;
                }
            }
        }
    });
    Ok((client, Notices(Mutex::new(receiver))))
}
