//! What operators did to what the consumers get, kept in
//! `operator_actions`: each `outbox replay`, `dead-letters requeue` and
//! `dead-letters purge` that changed something, with when, the selection
//! it was given, how many rows it touched, and who (the database role,
//! and the account the tool ran under). Requeue and purge record in the
//! transaction of their change, so the record and the change go
//! together; a replay records once it has sent.

use time::OffsetDateTime;
use tokio_postgres::GenericClient;

use crate::Result;

/// What an operator did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Replay,
    Requeue,
    Purge,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Replay => "replay",
            Action::Requeue => "requeue",
            Action::Purge => "purge",
        }
    }
}

/// The account a tool runs under: `user@host`, from the environment (as
/// the tool's user says it; the database role is recorded beside it).
pub fn account() -> String {
    let user = ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned());
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned());
    format!("{user}@{host}")
}

/// Records one action.
pub async fn record(
    client: &impl GenericClient,
    action: Action,
    selection: &str,
    rows: u64,
    account: &str,
) -> Result<()> {
    client
        .execute(
            "INSERT INTO operator_actions (action, selection, rows, by_account) VALUES ($1, $2, $3, $4)",
            &[&action.as_str(), &selection, &(rows as i64), &account],
        )
        .await?;
    Ok(())
}

/// One recorded action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRow {
    pub id: i64,
    pub at: OffsetDateTime,
    pub action: String,
    pub selection: String,
    pub rows: i64,
    pub by_role: String,
    pub by_account: String,
}

/// The last `limit` actions, newest first.
pub async fn recent(client: &impl GenericClient, limit: i64) -> Result<Vec<ActionRow>> {
    let rows = client
        .query(
            "SELECT id, at, action, selection, rows, by_role, by_account \
             FROM operator_actions ORDER BY id DESC LIMIT $1",
            &[&limit],
        )
        .await?;
    rows.iter()
        .map(|row| {
            Ok(ActionRow {
                id: row.try_get(0)?,
                at: row.try_get(1)?,
                action: row.try_get(2)?,
                selection: row.try_get(3)?,
                rows: row.try_get(4)?,
                by_role: row.try_get(5)?,
                by_account: row.try_get(6)?,
            })
        })
        .collect()
}
