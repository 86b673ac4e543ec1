//! The worker's ear: keeps one subscription to the server's change notices open while online,
//! tells the worker what it hears, reconnects with the worker's backoff rules, and leaves the
//! worker polling when the server offers no notices.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use tokio::time::sleep;

use super::worker::{WorkerConfig, backoff_delay};
use super::{Engine, Notices};
use crate::error::{Code, Error, ErrorClass, Result};

impl Engine {
    /// The cursor the device's next pull starts from.
    pub(super) async fn stored_cursor(&self) -> Result<Option<String>> {
        self.off_runtime(Engine::sync_cursor).await
    }

    /// Whether the device has pulled up to the last notice it heard (its own push, say).
    pub(super) async fn caught_up(&self) -> bool {
        let heard = self.inner.worker.heard.lock().unwrap_or_else(PoisonError::into_inner).clone();
        match (heard, self.stored_cursor().await) {
            (Some(heard), Ok(Some(stored))) => heard == stored,
            _ => false,
        }
    }

    /// A notice arrived: the feed now ends at `cursor`.
    fn heard(&self, cursor: String) {
        let w = &self.inner.worker;
        *w.heard.lock().unwrap_or_else(PoisonError::into_inner) = Some(cursor);
        w.raise(&w.remote);
    }

    /// Not subscribed: the worker polls (woken so it sets its poll timer).
    fn polling(&self) {
        self.set_notices(Notices::Polling);
        self.inner.worker.notify.notify_one();
    }
}

/// Runs for as long as the worker does (it never returns).
pub(super) async fn listen(engine: &Engine, config: WorkerConfig) {
    let Some(api) = engine.inner.api.clone() else {
        return std::future::pending().await;
    };
    let sig = &engine.inner.worker;
    let mut failures = 0u32;
    loop {
        if sig.offline.load(Ordering::SeqCst) {
            engine.polling();
            sig.listener.notified().await;
            continue;
        }
        let opened = match engine.stored_cursor().await {
            Ok(cursor) => api.subscribe(cursor).await,
            Err(e) => Err(e),
        };
        match opened {
            Ok(mut subscription) => {
                failures = 0;
                engine.set_notices(Notices::Live);
                tracing::debug!("listening for change notices");
                loop {
                    tokio::select! {
                        item = subscription.next() => match item {
                            Some(Ok(notice)) => engine.heard(notice.cursor),
                            Some(Err(e)) => {
                                tracing::debug!(class = ?e.class(), code = e.code().map(Code::as_str), "the notice stream failed");
                                break;
                            }
                            None => {
                                tracing::debug!("the server ended the notice stream");
                                break;
                            }
                        },
                        () = sig.listener.notified() => if sig.offline.load(Ordering::SeqCst) { break },
                    }
                }
                engine.polling();
                failures = failures.saturating_add(1);
            }
            Err(Error::Unsupported(what)) => {
                tracing::info!(%what, "the server offers no change notices; polling");
                engine.polling();
                return std::future::pending().await;
            }
            Err(e) if e.class() == ErrorClass::Unauthorized || e.code() == Some(Code::CursorExpired) => {
                // The worker's next cycle refreshes the token or re-syncs the feed; a cycle
                // that succeeds wakes this loop again.
                tracing::debug!(code = e.code().map(Code::as_str), "cannot subscribe until a cycle succeeds");
                engine.polling();
                engine.sync_now();
                sig.listener.notified().await;
                continue;
            }
            Err(e) => {
                tracing::debug!(class = ?e.class(), kind = ?e.kind(), "subscribing failed");
                engine.polling();
                failures = failures.saturating_add(1);
            }
        }
        let delay = backoff_delay(failures, config.backoff_base, config.backoff_cap, engine.jitter_unit(), None);
        tokio::select! {
            () = sleep(delay) => {}
            () = sig.listener.notified() => {}
        }
    }
}
