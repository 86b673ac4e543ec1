//! The background sync worker: runs sync cycles when something asks for one (a local write,
//! the network coming back, the app, its own backoff timer or poll), one at a time, backing off
//! with full jitter after failures and refreshing the token after a 401.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until};

use super::{Engine, Phase};
use crate::error::{Error, ErrorClass, Result};

/// Tunables of the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerConfig {
    /// After a local write, how long to wait for more writes before syncing them together.
    pub debounce: Duration,
    /// The first backoff step; each failure in a row doubles it.
    pub backoff_base: Duration,
    /// The longest backoff step.
    pub backoff_cap: Duration,
    /// How often to pull when nothing else triggers a cycle (others' changes); `None`: never.
    pub poll_every: Option<Duration>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            debounce: Duration::from_millis(250),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(300),
            poll_every: Some(Duration::from_secs(60)),
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
    notify: Notify,
    write: AtomicBool,
    now: AtomicBool,
    network_back: AtomicBool,
    offline: AtomicBool,
    auth: AtomicBool,
    running: AtomicBool,
}

impl Signals {
    fn raise(&self, flag: &AtomicBool) {
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
    }

    /// Tells the worker that the app has a new token after `needs_auth`; it resumes at once.
    pub fn auth_changed(&self) {
        let w = &self.inner.worker;
        w.raise(&w.auth);
    }

    pub(super) fn wake_worker(&self, wake: Wake) {
        let w = &self.inner.worker;
        match wake {
            Wake::Write => w.raise(&w.write),
        }
    }

    /// A uniform draw in `[0, 1)` from the engine's id source (seeded in simulations).
    fn jitter_unit(&self) -> f64 {
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

/// What to wait for next.
enum Next {
    /// Run a cycle now.
    Run,
    /// Wait for a signal, or until the instant (backoff or poll).
    Wait(Option<Instant>),
}

async fn run(engine: Engine, config: WorkerConfig, mut stop: oneshot::Receiver<()>) {
    let sig = &engine.inner.worker;
    let mut failures = 0u32;
    let mut backing_off = false;
    let mut needs_auth = false;
    let mut refreshed = false;
    let mut next = Next::Run;
    loop {
        if let Next::Wait(until) = next {
            tokio::select! {
                _ = &mut stop => return,
                () = sig.notify.notified() => {}
                () = sleep_until(until.unwrap_or_else(Instant::now)), if until.is_some() => {
                    backing_off = false;
                    next = Next::Run;
                }
            }
            let urgent = sig.now.swap(false, Ordering::SeqCst)
                | sig.network_back.swap(false, Ordering::SeqCst)
                | sig.auth.swap(false, Ordering::SeqCst);
            if urgent {
                backing_off = false;
                needs_auth = false;
                next = Next::Run;
            } else if !backing_off && !needs_auth && sig.write.load(Ordering::SeqCst) {
                // Let a burst of writes finish, then send them together.
                tokio::select! {
                    _ = &mut stop => return,
                    () = sleep(config.debounce) => {}
                }
                next = Next::Run;
            }
        }
        if !matches!(next, Next::Run) {
            continue;
        }
        if sig.offline.load(Ordering::SeqCst) {
            engine.set_phase(Phase::Offline);
            next = Next::Wait(None);
            continue;
        }
        sig.write.store(false, Ordering::SeqCst);
        let result = engine.sync_once().await;
        next = match result {
            Ok(_) => {
                failures = 0;
                refreshed = false;
                Next::Wait(config.poll_every.map(|p| Instant::now() + p))
            }
            Err(e) if e.class() == ErrorClass::Unauthorized => {
                if let (Some(auth), false) = (engine.inner.auth.clone(), refreshed) {
                    refreshed = true;
                    match auth.refresh().await {
                        Ok(_) => {
                            tracing::info!("token refreshed; resuming the batch");
                            Next::Run
                        }
                        Err(re) => {
                            tracing::warn!(
                                code = re.code().map(|c| c.as_str()),
                                "token refresh failed; sync needs auth"
                            );
                            needs_auth = true;
                            engine.set_phase(Phase::NeedsAuth);
                            Next::Wait(None)
                        }
                    }
                } else {
                    needs_auth = true;
                    engine.set_phase(Phase::NeedsAuth);
                    Next::Wait(None)
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                refreshed = false;
                let c = &config;
                let delay =
                    backoff_delay(failures, c.backoff_base, c.backoff_cap, engine.jitter_unit(), retry_after(&e));
                let until_ms = engine.inner.clock.now_ms() + delay.as_millis() as u64;
                tracing::debug!(failures, delay_ms = delay.as_millis() as u64, class = ?e.class(), "backing off");
                backing_off = true;
                engine.set_phase(Phase::BackingOff { until_ms });
                Next::Wait(Some(Instant::now() + delay))
            }
        };
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
