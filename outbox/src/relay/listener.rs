//! LISTEN/NOTIFY: wakes the relay as soon as rows are committed, on a
//! dedicated connection that is re-established when it drops. Polling in
//! [`super::Relay::run`] covers the gaps, so a lost notification only delays.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use platform::shutdown::Signal;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Config, NoTls};

/// The channel the outbox trigger notifies.
pub(crate) const CHANNEL: &str = "outbox";

/// Keeps a LISTEN connection open until `shutdown`, waking `wake` on each
/// notification and after each (re)connect.
pub(crate) async fn listen(config: Config, wake: Arc<Notify>, shutdown: Signal) {
    while !shutdown.is_cancelled() {
        match listen_once(&config, &wake, &shutdown).await {
            Ok(()) => tracing::debug!("outbox listener connection ended"),
            Err(error) => tracing::debug!(%error, "outbox listener failed"),
        }
        platform::shutdown::sleep(&shutdown, Duration::from_secs(1)).await;
    }
}

async fn listen_once(
    config: &Config,
    wake: &Arc<Notify>,
    shutdown: &Signal,
) -> Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let forward = wake.clone();
    let mut pump = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(_)) => forward.notify_one(),
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    // Rows committed while nobody listened are found by this wake-up.
    wake.notify_one();
    tokio::select! {
        _ = &mut pump => {}
        _ = shutdown.cancelled() => pump.abort(),
    }
    Ok(())
}
