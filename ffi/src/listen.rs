//! Listener callbacks: the sync status and record changes, each delivered on a thread of its
//! own, and the handle that cancels one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{JoinHandle, ThreadId};

use converge_core::Engine;
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::sync::broadcast::error::RecvError;

use crate::types::{Record, SyncStatus};

/// Hears the sync status: once with the current status when registered, then on each change
/// (quick changes may be folded into one call). Called on a background thread of its own, one
/// call at a time; hop to the main thread to touch the UI.
#[uniffi::export(with_foreign)]
pub trait StatusListener: Send + Sync {
    /// The status now.
    fn on_status(&self, status: SyncStatus);
}

/// Hears record changes: one call per record per committed change (a local write, a pulled
/// change, an acknowledgement or refusal that changed its state, a settled conflict). Called on
/// a background thread of its own, one call at a time, in commit order.
#[uniffi::export(with_foreign)]
pub trait RecordListener: Send + Sync {
    /// `record` is the record as it is now (`None`: it no longer exists on the device).
    fn on_change(&self, entity: String, record_id: String, record: Option<Record>);
    /// The listener fell more than 1,024 changes behind and `count` were skipped: re-read what
    /// it shows.
    fn on_missed(&self, count: u64);
}

/// A registered listener. `cancel()` (or dropping the handle) stops it: once `cancel` returns,
/// the listener is never called again (unless `cancel` is called from the listener itself, where
/// the call in progress ends first).
#[derive(uniffi::Object)]
pub struct ListenerHandle {
    stop: Arc<Stop>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    thread_id: Option<ThreadId>,
}

#[uniffi::export]
impl ListenerHandle {
    /// Stops the listener; calling it again does nothing.
    pub fn cancel(&self) {
        self.stop.set();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread
            && Some(std::thread::current().id()) != self.thread_id
        {
            let _ = thread.join();
        }
    }

    /// Whether the listener was cancelled (or its client closed).
    pub fn is_cancelled(&self) -> bool {
        self.stop.is_set()
    }
}

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// A stop flag a listener's thread waits on beside its channel.
#[derive(Default)]
pub(crate) struct Stop {
    flag: AtomicBool,
    notify: Notify,
}

impl Stop {
    pub(crate) fn set(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Resolves when set (checked after registering, so a set in between is not missed).
    async fn wait(&self) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !self.is_set() {
            notified.await;
        }
    }
}

/// Starts a listener thread running `run` until `stop` is set.
fn spawn(stop: Arc<Stop>, name: &str, run: impl FnOnce(Arc<Stop>) + Send + 'static) -> ListenerHandle {
    let inner = stop.clone();
    let thread = std::thread::Builder::new().name(name.to_owned()).spawn(move || run(inner));
    let (thread, thread_id) = match thread {
        Ok(t) => {
            let id = t.thread().id();
            (Some(t), Some(id))
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot start a listener thread");
            stop.set();
            (None, None)
        }
    };
    ListenerHandle { stop, thread: std::sync::Mutex::new(thread), thread_id }
}

/// Delivers the status to `listener` until stopped.
pub(crate) fn status(
    engine: &Engine,
    rt: Handle,
    stop: Arc<Stop>,
    listener: Arc<dyn StatusListener>,
) -> ListenerHandle {
    let mut rx = engine.watch_status();
    spawn(stop, "converge-status", move |stop| {
        let mut current = Some(rx.borrow_and_update().clone());
        while let Some(status) = current.take() {
            if stop.is_set() {
                return;
            }
            listener.on_status(status.into());
            current = rt.block_on(async {
                tokio::select! {
                    () = stop.wait() => None,
                    changed = rx.changed() => changed.ok().map(|()| rx.borrow_and_update().clone()),
                }
            });
        }
    })
}

/// Delivers record changes (of `entity`, or of all) to `listener` until stopped.
pub(crate) fn records(
    engine: &Engine,
    rt: Handle,
    stop: Arc<Stop>,
    entity: Option<String>,
    listener: Arc<dyn RecordListener>,
) -> ListenerHandle {
    let mut rx = engine.watch_records();
    let engine = engine.clone();
    spawn(stop, "converge-records", move |stop| {
        loop {
            let next = rt.block_on(async {
                tokio::select! {
                    () = stop.wait() => None,
                    next = rx.recv() => Some(next),
                }
            });
            if stop.is_set() {
                return;
            }
            match next {
                None | Some(Err(RecvError::Closed)) => return,
                Some(Err(RecvError::Lagged(n))) => listener.on_missed(n),
                Some(Ok(change)) => {
                    if entity.as_ref().is_some_and(|e| *e != change.entity) {
                        continue;
                    }
                    let record = match engine.get(&change.entity, &change.record_id) {
                        Ok(view) => view.map(Record::from),
                        Err(e) => {
                            tracing::warn!(error = %e.report(), "cannot read a changed record for its listener");
                            None
                        }
                    };
                    listener.on_change(change.entity, change.record_id, record);
                }
            }
        }
    })
}
