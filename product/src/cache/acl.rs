//! The product service's Redis user: the keys under its prefix and the
//! commands it runs, nothing else (Redis ACL). Whoever reaches Redis as
//! this user cannot read or change another's keys, flush, reconfigure or
//! run a script of its own making (`EVAL`): only the scripts of
//! [`super::scripts`], by their SHA.
//!
//! Redis checks a script's commands against the user that runs it, so
//! the list holds what the scripts call as well as what the service sends.
//! redis-rs runs a script with `EVALSHA` and loads it with `SCRIPT LOAD`
//! when the server lacks it (after a restart, say).

use redis::aio::MultiplexedConnection;

/// Every command the service and its scripts send, for the ACL rule.
pub const COMMANDS: &[&str] = &[
    // Reads of the cache and the counters (a pipeline of GET and HMGET).
    "get",
    "hmget",
    // The scripts, by SHA, loaded when the server lacks them.
    "evalsha",
    "script|load",
    // What the scripts call.
    "set",
    "del",
    "expire",
    "hget",
    "hset",
    "hincrby",
    // Readiness, and the connection's set-up by the client (its
    // CLIENT SETINFO, from Redis 7.2 on, is sent with errors ignored).
    "ping",
    "hello",
    "select",
];

/// The ACL rule of a user with `password` (none: any password is
/// accepted, for a Redis only this host reaches) limited to keys
/// beginning with `prefix` and to [`COMMANDS`].
pub fn rule(password: Option<&str>, prefix: &str) -> Vec<String> {
    let mut rule = vec!["reset".to_owned(), "on".to_owned()];
    rule.push(match password {
        Some(password) => format!(">{password}"),
        None => "nopass".to_owned(),
    });
    rule.push(format!("~{}*", glob_escape(prefix)));
    rule.push("resetchannels".to_owned());
    rule.push("-@all".to_owned());
    rule.extend(COMMANDS.iter().map(|command| format!("+{command}")));
    rule
}

/// `prefix` with Redis's glob characters escaped, matched as it is.
fn glob_escape(prefix: &str) -> String {
    let mut escaped = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// What [`provision`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    /// Whether the server wrote the users to its ACL file (`aclfile`):
    /// without one, a restart forgets the user.
    pub saved: bool,
}

/// Makes (or resets) user `user` on the server `admin` reaches as an
/// administrator, with [`rule`]; writes the server's ACL file when it has
/// one.
pub async fn provision(
    admin: &mut MultiplexedConnection,
    user: &str,
    password: Option<&str>,
    prefix: &str,
) -> redis::RedisResult<Provisioned> {
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(user)
        .arg(rule(password, prefix))
        .query_async(admin)
        .await?;
    let aclfile: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("aclfile")
        .query_async(admin)
        .await?;
    let has_file = aclfile.get(1).is_some_and(|path| !path.is_empty());
    if has_file {
        let _: () = redis::cmd("ACL").arg("SAVE").query_async(admin).await?;
    }
    Ok(Provisioned { saved: has_file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_names_the_prefix_and_only_the_commands() {
        let rule = rule(Some("s3cret"), "shop[1]:");
        assert_eq!(
            &rule[..5],
            ["reset", "on", ">s3cret", "~shop\\[1\\]:*", "resetchannels"]
        );
        assert_eq!(rule[5], "-@all");
        let granted: Vec<&str> = rule
            .iter()
            .filter_map(|part| part.strip_prefix('+'))
            .collect();
        assert_eq!(granted, COMMANDS);
        assert!(
            !granted.contains(&"eval"),
            "no script of the caller's own making"
        );
        assert_eq!(super::rule(None, "p:")[2], "nopass");
    }
}
