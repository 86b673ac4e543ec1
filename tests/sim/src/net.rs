//! The simulated network: a `SyncApi` decorator that drops, delays, reorders and duplicates
//! requests and drops responses, at rates drawn per seed, with every choice from the seed.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use converge_core::{Change, Error, PullRequest, PullResponse, PushRequest, PushResponse, Result, SyncApi};

use crate::rng::Rng;

/// Fault rates of one run.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Rates {
    /// A request never reaches the server.
    pub drop_request: f64,
    /// The server applies a request but the answer is lost.
    pub drop_response: f64,
    /// A request reaches the server twice.
    pub duplicate: f64,
    /// A request is held and reaches the server later, after others (the device times out).
    pub delay: f64,
    /// A push is answered with a server error (500), half the time after the server applied it.
    pub server_error: f64,
}

/// Faults injected so far.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct FaultCounts {
    /// Requests dropped.
    pub dropped_requests: u64,
    /// Responses dropped after the server applied the request.
    pub dropped_responses: u64,
    /// Requests delivered twice.
    pub duplicates: u64,
    /// Requests held back and delivered late.
    pub delayed: u64,
    /// Calls refused while the device was offline.
    pub offline_refusals: u64,
    /// Pushes answered with a server error.
    pub server_errors: u64,
}

struct State {
    rng: Rng,
    rates: Rates,
    held: Vec<PushRequest>,
    counts: FaultCounts,
}

/// One device's link to the server.
pub(crate) struct Link {
    inner: std::sync::Arc<dyn SyncApi>,
    offline: AtomicBool,
    state: Mutex<State>,
}

impl Link {
    /// A link with fault rates and its own generator.
    pub(crate) fn new(inner: std::sync::Arc<dyn SyncApi>, rates: Rates, rng: Rng) -> Link {
        Link {
            inner,
            offline: AtomicBool::new(false),
            state: Mutex::new(State { rng, rates, held: Vec::new(), counts: FaultCounts::default() }),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Takes the device off or on the network.
    pub(crate) fn set_offline(&self, offline: bool) {
        self.offline.store(offline, Ordering::SeqCst);
    }

    /// Whether the device is offline.
    pub(crate) fn is_offline(&self) -> bool {
        self.offline.load(Ordering::SeqCst)
    }

    /// Switches faults off (the run's quiet phase).
    pub(crate) fn calm(&self) {
        self.with(|s| s.rates = Rates::default());
        self.set_offline(false);
    }

    /// Delivers one held request (chosen by the generator) to the server; its answer is lost.
    pub(crate) async fn deliver_one(&self) -> Option<String> {
        let req = self.with(|s| {
            if s.held.is_empty() {
                return None;
            }
            let i = s.rng.below(s.held.len() as u64) as usize;
            Some(s.held.remove(i))
        })?;
        let key = req.idempotency_key.clone();
        let outcome = match self.inner.push(req).await {
            Ok(r) => {
                format!("ok a{} c{} r{} replay={}", r.accepted.len(), r.conflicts.len(), r.rejected.len(), r.replayed)
            }
            Err(e) => format!("err {:?}", e.code()),
        };
        Some(format!("late {key} {outcome}"))
    }

    /// Faults injected so far.
    pub(crate) fn counts(&self) -> FaultCounts {
        self.with(|s| s.counts)
    }
}

enum Fate {
    Offline,
    Drop,
    Hold,
    Deliver { duplicate: bool, lose_answer: bool },
    ServerError { applied: bool },
}

impl Link {
    fn fate(&self, can_hold: bool) -> Fate {
        if self.is_offline() {
            self.with(|s| s.counts.offline_refusals += 1);
            return Fate::Offline;
        }
        self.with(|s| {
            let r = s.rates;
            if s.rng.chance(r.drop_request) {
                s.counts.dropped_requests += 1;
                return Fate::Drop;
            }
            if can_hold && s.rng.chance(r.delay) {
                s.counts.delayed += 1;
                return Fate::Hold;
            }
            if can_hold && s.rng.chance(r.server_error) {
                s.counts.server_errors += 1;
                return Fate::ServerError { applied: s.rng.chance(0.5) };
            }
            let duplicate = s.rng.chance(r.duplicate);
            let lose_answer = s.rng.chance(r.drop_response);
            s.counts.duplicates += u64::from(duplicate);
            s.counts.dropped_responses += u64::from(lose_answer);
            Fate::Deliver { duplicate, lose_answer }
        })
    }
}

#[async_trait]
impl SyncApi for Link {
    async fn push(&self, req: PushRequest) -> Result<PushResponse> {
        match self.fate(true) {
            Fate::Offline => Err(Error::offline("simulated: offline")),
            Fate::Drop => Err(Error::offline("simulated: request lost")),
            Fate::Hold => {
                self.with(|s| s.held.push(req));
                Err(Error::offline("simulated: timed out"))
            }
            Fate::ServerError { applied } => {
                if applied {
                    let _ = self.inner.push(req).await;
                }
                Err(Error::Api(converge_core::ApiError::new(converge_core::Code::Internal, "simulated: server error")))
            }
            Fate::Deliver { duplicate, lose_answer } => {
                let resp = self.inner.push(req.clone()).await;
                if duplicate {
                    let _ = self.inner.push(req).await;
                }
                if lose_answer {
                    return Err(Error::offline("simulated: response lost"));
                }
                resp
            }
        }
    }

    async fn pull(&self, req: PullRequest) -> Result<PullResponse> {
        match self.fate(false) {
            Fate::Offline => Err(Error::offline("simulated: offline")),
            Fate::Drop | Fate::Hold | Fate::ServerError { .. } => Err(Error::offline("simulated: request lost")),
            Fate::Deliver { lose_answer, .. } => {
                let resp = self.inner.pull(req).await;
                if lose_answer {
                    return Err(Error::offline("simulated: response lost"));
                }
                resp
            }
        }
    }

    async fn record(&self, entity: &str, record_id: &str) -> Result<Change> {
        self.inner.record(entity, record_id).await
    }

    async fn subscribe(&self, cursor: Option<String>) -> Result<converge_core::Subscription> {
        self.inner.subscribe(cursor).await
    }
}
