//! The background sync worker: runs sync cycles when something asks for one (a local write,
//! a change notice, the network coming back, the app, its own backoff timer or poll), one at a
//! time, backing off with full jitter after failures; after a 401 the cycle itself refreshes the
//! token once, and a refusal after that waits in `needs_auth` for the app.
//! Beside it, `listen.rs` keeps the subscription to change notices.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until};

use super::{Engine, Notices, Phase};
use crate::error::{Error, ErrorClass, Result};

/// Tunables of the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerConfig {
    /// After a local write that finds the worker idle, how long to wait for more writes before
    /// syncing (default zero: the first write goes at once, and writes made during a cycle go
    /// together in the next one).
    pub debounce: Duration,
    /// The first backoff step; each failure in a row doubles it.
    pub backoff_base: Duration,
    /// The longest backoff step.
    pub backoff_cap: Duration,
    /// How often to pull when nothing else triggers a cycle and the device is not subscribed to
    /// change notices (the server offers none, or the subscription is down); `None`: never.
    pub poll_every: Option<Duration>,
    /// Polls every `poll_every` also while subscribed (default off: a notice says when to pull).
    /// For a store that other processes write too, whose writes no signal announces.
    pub poll_while_live: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            debounce: Duration::ZERO,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(300),
            poll_every: Some(Duration::from_secs(60)),
            poll_while_live: false,
        }
    }
}

/// The wait before the next attempt after `failures` failures in a row: "full jitter", uniform
/// in `[0, min(cap, base × 2^(failures-1))]` (`unit` is the uniform draw in `[0, 1)`), and
/// never shorter than the server's `Retry-After`.
pub fn backoff_delay(
    failures: u32,
    base: Duration,
    cap: Duration,
    unit: f64,
    retry_after: Option<Duration>,
) -> Duration {
    let step = base.saturating_mul(1u32 << failures.saturating_sub(1).min(30)).min(cap);
    let jittered = step.mul_f64(unit.clamp(0.0, 1.0));
    jittered.max(retry_after.unwrap_or_default())
}

/// Why the worker was woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wake {
    /// A local write (debounced).
    Write,
}

/// What the app and the engine tell a running worker; cheap to set from any thread.
#[derive(Default)]
pub(super) struct Signals {
    pub(super) notify: Notify,
    write: AtomicBool,
    now: AtomicBool,
    network_back: AtomicBool,
    auth: AtomicBool,
    running: AtomicBool,
    /// A change notice arrived; its cursor is in `heard`.
    pub(super) remote: AtomicBool,
    pub(super) heard: Mutex<Option<String>>,
    /// Wakes the listener: the network or the token changed, or a cycle succeeded.
    pub(super) listener: Notify,
    pub(super) offline: AtomicBool,
}

impl Signals {
    pub(super) fn raise(&self, flag: &AtomicBool) {
        flag.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }
}

/// A running worker. Dropping it stops the worker at its next await point (every step of a
/// cycle is its own transaction, so stopping anywhere is safe); `stop` waits for a running
/// cycle to end first.
pub struct WorkerHandle {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    engine: Engine,
}

impl WorkerHandle {
    /// Stops the worker after the cycle it is running, if any.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.engine.inner.worker.running.store(false, Ordering::SeqCst);
        self.engine.set_notices(Notices::Off);
    }
}

impl Engine {
    /// Starts the background sync worker on the current tokio runtime. It runs a cycle at once
    /// (there may be work left from before), then whenever asked. One worker per engine.
    pub fn start_worker(&self, config: WorkerConfig) -> Result<WorkerHandle> {
        if self.inner.api.is_none() {
            return Err(Error::InvalidInput("the worker needs a sync API (EngineBuilder::api)".into()));
        }
        if config.backoff_base.is_zero() || config.backoff_cap < config.backoff_base {
            return Err(Error::InvalidInput("backoff_base must be above zero and at most backoff_cap".into()));
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::InvalidInput("start the worker from inside a tokio runtime".into()))?;
        if self.inner.worker.running.swap(true, Ordering::SeqCst) {
            return Err(Error::InvalidInput("a worker is already running for this engine".into()));
        }
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = runtime.spawn(run(self.clone(), config, stop_rx));
        Ok(WorkerHandle { stop: Some(stop_tx), task: Some(task), engine: self.clone() })
    }

    /// Asks the worker for a cycle now, also during a backoff or after `needs_auth`.
    pub fn sync_now(&self) {
        let w = &self.inner.worker;
        w.raise(&w.now);
    }

    /// Tells the worker whether the device has a network. Offline, it makes no attempts (phase
    /// `offline`); back online, it syncs at once, ending any backoff.
    pub fn network_changed(&self, online: bool) {
        let w = &self.inner.worker;
        w.offline.store(!online, Ordering::SeqCst);
        if online {
            w.raise(&w.network_back);
        } else {
            w.notify.notify_one();
        }
        w.listener.notify_one();
    }

    /// Tells the worker that the app has a new token after `needs_auth`; it resumes at once.
    pub fn auth_changed(&self) {
        let w = &self.inner.worker;
        w.raise(&w.auth);
        w.listener.notify_one();
    }

    pub(super) fn wake_worker(&self, wake: Wake) {
        let w = &self.inner.worker;
        match wake {
            Wake::Write => w.raise(&w.write),
        }
    }

    /// A uniform draw in `[0, 1)` from the engine's id source (seeded in simulations).
    pub(super) fn jitter_unit(&self) -> f64 {
        let bytes = self.inner.ids.new_uuid().into_bytes();
        let mut tail = [0u8; 8];
        tail.copy_from_slice(&bytes[8..]);
        (u64::from_le_bytes(tail) >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn retry_after(e: &Error) -> Option<Duration> {
    match e {
        Error::Api(a) => a.retry_after,
        _ => None,
    }
}

async fn run(engine: Engine, config: WorkerConfig, stop: oneshot::Receiver<()>) {
    tokio::select! {
        () = work(&engine, config, stop) => {}
        () = super::listen::listen(&engine, config) => {}
    }
    engine.set_notices(Notices::Off);
}

/// The cycles: one at start, then one whenever asked, backing off after failures.
async fn work(engine: &Engine, config: WorkerConfig, mut stop: oneshot::Receiver<()>) {
    let sig = &engine.inner.worker;
    let mut failures = 0u32;
    let mut backoff_until: Option<Instant> = None;
    let mut needs_auth = false;
    let mut last_cycle = Instant::now();
    let mut run_now = true;
    loop {
        if !run_now {
            let offline = sig.offline.load(Ordering::SeqCst);
            let live = engine.inner.status.borrow().notices == Notices::Live;
            let until = match backoff_until {
                Some(t) => Some(t),
                None if needs_auth || offline || (live && !config.poll_while_live) => None,
                None => config.poll_every.map(|p| last_cycle + p),
            };
            tokio::select! {
                _ = &mut stop => return,
                () = sig.notify.notified() => {}
                () = sleep_until(until.unwrap_or_else(Instant::now)), if until.is_some() => {
                    backoff_until = None;
                    run_now = true;
                }
            }
            let urgent = sig.now.swap(false, Ordering::SeqCst)
                | sig.network_back.swap(false, Ordering::SeqCst)
                | sig.auth.swap(false, Ordering::SeqCst);
            if urgent {
                backoff_until = None;
                needs_auth = false;
                run_now = true;
            } else if backoff_until.is_none() && !needs_auth {
                if sig.write.load(Ordering::SeqCst) {
                    if !config.debounce.is_zero() {
                        tokio::select! {
                            _ = &mut stop => return,
                            () = sleep(config.debounce) => {}
                        }
                    }
                    run_now = true;
                } else if sig.remote.swap(false, Ordering::SeqCst) {
                    // A notice of a change this device already pulled (its own push) asks for
                    // nothing.
                    run_now = run_now || !engine.caught_up().await;
                }
            }
            if !run_now {
                continue;
            }
        }
        run_now = false;
        if sig.offline.load(Ordering::SeqCst) {
            engine.set_phase(Phase::Offline);
            continue;
        }
        sig.write.store(false, Ordering::SeqCst);
        sig.remote.store(false, Ordering::SeqCst);
        let result = engine.sync_once().await;
        last_cycle = Instant::now();
        match result {
            Ok(_) => {
                failures = 0;
                sig.listener.notify_one();
            }
            Err(e) if e.class() == ErrorClass::Unauthorized => {
                // The cycle already asked the auth provider for a new token once (see
                // `sync_once`): the user must sign in again.
                needs_auth = true;
                engine.set_phase(Phase::NeedsAuth);
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let c = &config;
                let delay =
                    backoff_delay(failures, c.backoff_base, c.backoff_cap, engine.jitter_unit(), retry_after(&e));
                let until_ms = engine.inner.clock.now_ms() + delay.as_millis() as u64;
                tracing::debug!(failures, delay_ms = delay.as_millis() as u64, class = ?e.class(), "backing off");
                engine.set_phase(Phase::BackingOff { until_ms });
                backoff_until = Some(Instant::now() + delay);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_full_jitter_capped_and_floored_by_retry_after() {
        let (base, cap) = (Duration::from_secs(1), Duration::from_secs(300));
        for failures in 1..40 {
            let step = base.saturating_mul(1 << (failures - 1).min(30)).min(cap);
            assert_eq!(backoff_delay(failures, base, cap, 0.0, None), Duration::ZERO);
            assert_eq!(backoff_delay(failures, base, cap, 1.0, None), step);
            let mid = backoff_delay(failures, base, cap, 0.5, None);
            assert!(mid <= step && mid >= step / 3, "{failures}: {mid:?} of {step:?}");
        }
        assert_eq!(backoff_delay(3, base, cap, 1.0, None), Duration::from_secs(4));
        assert_eq!(backoff_delay(30, base, cap, 1.0, None), cap);
        let after = Some(Duration::from_secs(42));
        assert_eq!(backoff_delay(1, base, cap, 0.5, after), Duration::from_secs(42));
        assert_eq!(backoff_delay(20, base, cap, 1.0, after), cap, "a longer step wins over Retry-After");
    }
}
