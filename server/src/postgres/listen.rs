//! Change notices from other server nodes: one connection per store `LISTEN`s on the feed channel
//! and wakes the service's subscriptions for each tenant notified; after a lost connection it
//! reconnects with backoff and wakes every subscription, since notices may have been missed.

use std::sync::Arc;
use std::time::Duration;

use converge_core::server_store::RemoteChange;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};
use tracing::{debug, warn};

use super::CHANNEL;

/// The listening task; stopped when dropped.
pub(crate) struct Listener(JoinHandle<()>);

impl Drop for Listener {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Listener {
    /// Starts listening, if there is a runtime to listen on (a store made outside one only sees
    /// its own pushes).
    pub(crate) fn start(config: Arc<tokio_postgres::Config>, changed: RemoteChange) -> Option<Listener> {
        let rt = tokio::runtime::Handle::try_current().ok()?;
        Some(Listener(rt.spawn(run(config, changed))))
    }
}

async fn run(config: Arc<tokio_postgres::Config>, changed: RemoteChange) {
    let mut delay = Duration::from_millis(100);
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => {
                                if tx.send(n.payload().to_owned()).is_err() {
                                    break;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                warn!(error = %e, "the change-notice connection failed");
                                break;
                            }
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                    Ok(()) => {
                        debug!("listening for other nodes' pushes");
                        delay = Duration::from_millis(100);
                        // Anything pushed while no connection listened is found by re-reading.
                        changed(None);
                        while let Some(tenant) = rx.recv().await {
                            changed(Some(&tenant));
                        }
                    }
                    Err(e) => warn!(error = %e, "cannot listen for change notices"),
                }
                driver.abort();
            }
            Err(e) => debug!(error = %e, "cannot connect to listen for change notices"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
