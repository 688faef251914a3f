//! The signal that stops a process: SIGTERM (what process managers send)
//! or SIGINT (Ctrl-C), and the stop request its background tasks watch
//! for between units of work.

use std::time::Duration;

/// A stop request: cancelled once, seen by every clone. Background tasks
/// check it between units of work and wait on it where they would sleep.
pub type Signal = tokio_util::sync::CancellationToken;

/// Completes when the process receives SIGTERM or SIGINT.
pub async fn signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutdown signal received");
}

/// Sleeps for `duration`, or less if `stop` is cancelled first.
pub async fn sleep(stop: &Signal, duration: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        _ = stop.cancelled() => {}
    }
}
