//! The signal that stops a service: SIGTERM (what process managers send) or
//! SIGINT (Ctrl-C).

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

/// Fires a [`Signal`]: every clone of it completes its `wait`.
#[derive(Debug)]
pub struct Trigger(tokio::sync::watch::Sender<bool>);

/// A stop request background tasks watch for between units of work.
#[derive(Debug, Clone)]
pub struct Signal(tokio::sync::watch::Receiver<bool>);

/// A trigger and the signal it fires.
pub fn channel() -> (Trigger, Signal) {
    let (sender, receiver) = tokio::sync::watch::channel(false);
    (Trigger(sender), Signal(receiver))
}

impl Trigger {
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

impl Signal {
    /// Completes once the trigger fires (or is dropped).
    pub async fn wait(&self) {
        let mut receiver = self.0.clone();
        let _ = receiver.wait_for(|fired| *fired).await;
    }

    pub fn is_fired(&self) -> bool {
        *self.0.borrow()
    }

    /// Sleeps for `duration`, or less if the trigger fires first.
    pub async fn sleep(&self, duration: std::time::Duration) {
        tokio::select! {
            _ = tokio::time::sleep(duration) => {}
            _ = self.wait() => {}
        }
    }
}
