//! Logging through `tracing`: readable lines by default, one JSON object per
//! line with `LOG_FORMAT=json`. `RUST_LOG` filters (default `info`, with
//! the may runtime's per-socket lines at `warn`). Colours only on a terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The filter when `RUST_LOG` is unset.
const DEFAULT_FILTER: &str = "info,may=warn,refinery_core=warn";

/// lapin logs every message the broker returns, whole, as arrays of bytes
/// (several KB a line); the relay logs each refusal itself, in one line.
/// Added to any filter that does not name this target itself.
const RETURNED_MESSAGES: &str = "lapin::returned_messages=error";

/// Installs the global subscriber once; later calls (tests that start
/// several applications) keep the first.
pub fn init() {
    let directives =
        std::env::var(EnvFilter::DEFAULT_ENV).unwrap_or_else(|_| DEFAULT_FILTER.into());
    let filter = EnvFilter::try_new(with_quiet_returns(&directives))
        .unwrap_or_else(|_| EnvFilter::new(with_quiet_returns(DEFAULT_FILTER)));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|format| format.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

fn with_quiet_returns(directives: &str) -> String {
    if directives.contains("lapin::returned_messages") {
        directives.to_owned()
    } else {
        format!("{directives},{RETURNED_MESSAGES}")
    }
}

/// For integration tests: silent unless `TEST_LOG` is set.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returned_messages_are_quiet_unless_asked_for() {
        assert_eq!(
            with_quiet_returns("info"),
            "info,lapin::returned_messages=error"
        );
        let asked = "debug,lapin::returned_messages=warn";
        assert_eq!(with_quiet_returns(asked), asked);
        assert!(EnvFilter::try_new(with_quiet_returns(DEFAULT_FILTER)).is_ok());
    }
}
