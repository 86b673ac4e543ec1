//! The background worker on a paused tokio clock, against the real service on a SQLite file:
//! backoff schedule and jitter bounds, Retry-After, debounced writes, a trigger during a cycle,
//! network changes, token refresh, poison ops and dead letters.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use converge_core::wire::Limits;
use converge_core::{
    ApiError, AuthProvider, Change, Clock, Code, Engine, EngineConfig, Error, Phase, PullRequest, PullResponse,
    PushRequest, PushResponse, Result, Scope, SyncApi, Tenancy, WorkerConfig,
};
use converge_server::{SqliteServerStore, SyncService};
use converge_sqlite::SqliteStore;
use converge_test_support::obj;
use serde_json::json;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What the next push does.
enum Step {
    Fail(Error),
    /// Waits for the notify, then passes.
    Hold(Arc<Notify>),
}

/// One push as the API saw it.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    key: String,
    ops: usize,
    ok: bool,
}

/// The real service behind a script of push outcomes; a record named `poison` makes any batch
/// holding it fail with a server error.
struct Scripted {
    inner: Arc<dyn SyncApi>,
    steps: Mutex<VecDeque<Step>>,
    seen: Mutex<Vec<Seen>>,
    pulls: AtomicU32,
}

impl Scripted {
    fn then(&self, step: Step) {
        self.steps.lock().unwrap().push_back(step);
    }
    fn fail(&self, n: usize, e: impl Fn() -> Error) {
        for _ in 0..n {
            self.then(Step::Fail(e()));
        }
    }
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

#[async_trait]
impl SyncApi for Scripted {
    async fn push(&self, req: PushRequest) -> Result<PushResponse> {
        let step = self.steps.lock().unwrap().pop_front();
        let mut seen =
            Seen { at: Instant::now(), key: req.idempotency_key.clone(), ops: req.batch.mutations.len(), ok: false };
        let result = match step {
            Some(Step::Fail(e)) => Err(e),
            _ if req.batch.mutations.iter().any(|m| m.record_id == "poison") => {
                Err(Error::Api(ApiError::new(Code::Internal, "the server tripped on this batch")))
            }
            Some(Step::Hold(gate)) => {
                gate.notified().await;
                self.inner.push(req).await
            }
            None => self.inner.push(req).await,
        };
        seen.ok = result.is_ok();
        self.seen.lock().unwrap().push(seen);
        result
    }

    async fn pull(&self, req: PullRequest) -> Result<PullResponse> {
        self.pulls.fetch_add(1, Ordering::SeqCst);
        self.inner.pull(req).await
    }

    async fn record(&self, entity: &str, record_id: &str) -> Result<Change> {
        self.inner.record(entity, record_id).await
    }

    async fn subscribe(&self, cursor: Option<String>) -> Result<converge_core::Subscription> {
        self.inner.subscribe(cursor).await
    }
}

/// Wall time that follows tokio's (paused) clock.
struct TokioClock(Instant);

impl Clock for TokioClock {
    fn now_ms(&self) -> u64 {
        1_800_000_000_000 + self.0.elapsed().as_millis() as u64
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    api: Arc<Scripted>,
    server: Arc<dyn SyncApi>,
    engine: Engine,
}

fn rig_with(config: EngineConfig, auth: Option<Arc<dyn AuthProvider>>) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteServerStore::open(&dir.path().join("server.db")).unwrap();
    let service = SyncService::new(Arc::new(store), Limits::default());
    let server = service.scoped(Scope::new("acme", "u"));
    let api = Arc::new(Scripted {
        inner: server.clone(),
        steps: Mutex::default(),
        seen: Mutex::default(),
        pulls: AtomicU32::new(0),
    });
    let engine = open(&dir.path().join("a.db"), api.clone(), config, auth);
    Rig { _dir: dir, api, server, engine }
}

fn open(path: &Path, api: Arc<Scripted>, config: EngineConfig, auth: Option<Arc<dyn AuthProvider>>) -> Engine {
    let mut b = Engine::builder(Box::new(SqliteStore::open(path).unwrap()))
        .api(api)
        .config(config)
        .clock(Arc::new(TokioClock(Instant::now())));
    if let Some(auth) = auth {
        b = b.auth(auth);
    }
    b.build().unwrap()
}

fn rig() -> Rig {
    rig_with(EngineConfig::default(), None)
}

fn offline() -> Error {
    Error::offline("connection refused")
}

const CONFIG: WorkerConfig = WorkerConfig {
    debounce: Duration::from_millis(250),
    backoff_base: Duration::from_secs(1),
    backoff_cap: Duration::from_secs(60),
    poll_every: None,
    poll_while_live: false,
};

/// Waits (on the paused clock) until `f` holds, at most `limit` of tokio time.
async fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn backoff_stays_within_full_jitter_bounds_doubles_to_the_cap_and_resets_on_success() {
    let r = rig();
    r.engine.put("notes", "a", obj(json!({"t": 1}))).unwrap();
    r.api.fail(10, offline);
    let worker = r.engine.start_worker(CONFIG).unwrap();
    until(Duration::from_secs(3600), "the 11th push", || r.api.seen().len() >= 11).await;
    let seen = r.api.seen();
    assert!(seen[10].ok, "the push after the failures goes through");
    let mut below_step = 0;
    for n in 1..=10u32 {
        let gap = seen[n as usize].at - seen[n as usize - 1].at;
        let step = CONFIG.backoff_base.saturating_mul(1 << (n - 1)).min(CONFIG.backoff_cap);
        // Each wait is uniform in [0, step] (plus a little for the cycle's own work).
        assert!(gap <= step + Duration::from_millis(5), "failure {n}: waited {gap:?}, step {step:?}");
        if gap < step.mul_f64(0.9) {
            below_step += 1;
        }
    }
    assert!(below_step >= 3, "the waits are jittered, not the bare steps: {seen:?}");
    let all_same_key = seen.iter().all(|s| s.key == seen[0].key);
    assert!(all_same_key, "every resend carries the same idempotency key");
    until(Duration::from_secs(5), "idle", || r.engine.status().phase == Phase::Idle).await;
    assert_eq!(r.engine.status().pending, 0);
    assert_eq!(r.server.record("notes", "a").await.unwrap().version, 1, "applied once");
    // After a success the schedule starts over: the next failure waits at most one base step.
    r.api.fail(1, offline);
    r.engine.put("notes", "b", obj(json!({"t": 2}))).unwrap();
    until(Duration::from_secs(600), "two more pushes", || r.api.seen().len() >= 13).await;
    let seen = r.api.seen();
    assert!(seen[12].at - seen[11].at <= CONFIG.backoff_base + Duration::from_millis(5), "{seen:?}");
    worker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_phase_shows_until_when_the_worker_backs_off() {
    let r = rig();
    r.engine.put("notes", "a", obj(json!({"t": 1}))).unwrap();
    r.api.fail(3, offline);
    let mut status = r.engine.watch_status();
    let worker = r.engine.start_worker(CONFIG).unwrap();
    let until_ms = loop {
        status.changed().await.unwrap();
        if let Phase::BackingOff { until_ms } = status.borrow().phase {
            break until_ms;
        }
    };
    let s = r.engine.status();
    assert_eq!(s.last_error.as_ref().map(|e| e.class), Some(converge_core::ErrorClass::Retryable));
    let now = r.engine.status().last_error.unwrap().at_ms;
    assert!((now..=now + 1000).contains(&until_ms), "the first wait is at most one base step: {now} {until_ms}");
    until(Duration::from_secs(600), "synced", || r.engine.status().pending == 0).await;
    assert_eq!(r.engine.status().phase, Phase::Idle);
    assert!(r.engine.status().last_error.is_none(), "a success clears the last error");
    worker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn retry_after_from_the_server_is_honoured() {
    let r = rig();
    r.engine.put("notes", "a", obj(json!({"t": 1}))).unwrap();
    r.api.fail(1, || {
        Error::Api(ApiError::new(Code::Unavailable, "maintenance").with_retry_after(Duration::from_secs(42)))
    });
    r.api
        .fail(1, || Error::Api(ApiError::new(Code::RateLimited, "slow down").with_retry_after(Duration::from_secs(7))));
    let worker = r.engine.start_worker(CONFIG).unwrap();
    until(Duration::from_secs(600), "3 pushes", || r.api.seen().len() >= 3).await;
    let seen = r.api.seen();
    assert!(seen[1].at - seen[0].at >= Duration::from_secs(42), "{seen:?}");
    assert!(seen[2].at - seen[1].at >= Duration::from_secs(7), "{seen:?}");
    // Retry-After is a floor; the jittered step (at most 2 s here) does not add to it.
    assert!(seen[1].at - seen[0].at <= Duration::from_secs(43), "{seen:?}");
    assert!(seen[2].ok);
    worker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_writes_goes_out_in_one_cycle_and_a_write_during_a_cycle_gets_one_more() {
    let r = rig();
    let worker = r.engine.start_worker(CONFIG).unwrap();
    until(Duration::from_secs(5), "the start-up cycle", || r.api.pulls.load(Ordering::SeqCst) >= 1).await;
    for i in 0..30 {
        r.engine.put("notes", &format!("n{i}"), obj(json!({"i": i}))).unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    until(Duration::from_secs(5), "synced", || r.engine.status().pending == 0).await;
    let seen = r.api.seen();
    assert_eq!(seen.len(), 1, "one debounced cycle, one batch: {seen:?}");
    assert_eq!(seen[0].ops, 30);
    // A write while a push is held in the server: once the cycle ends, one more runs for it.
    let gate = Arc::new(Notify::new());
    r.api.then(Step::Hold(gate.clone()));
    r.engine.put("notes", "x", obj(json!({"v": 1}))).unwrap();
    until(Duration::from_secs(5), "the held push", || r.api.steps.lock().unwrap().is_empty()).await;
    r.engine.put("notes", "y", obj(json!({"v": 2}))).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(r.api.seen().len(), 1, "the cycle is still held; no second cycle runs beside it");
    gate.notify_one();
    until(Duration::from_secs(5), "y synced", || r.engine.status().pending == 0).await;
    let seen = r.api.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!((seen[1].ops, seen[2].ops), (1, 1));
    worker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn offline_means_no_attempts_and_the_network_coming_back_syncs_at_once() {
    let r = rig();
    r.engine.network_changed(false);
    let worker = r.engine.start_worker(CONFIG).unwrap();
    r.engine.put("notes", "a", obj(json!({"t": 1}))).unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(r.api.seen().is_empty(), "no attempt while the app says offline");
    assert_eq!(r.engine.status().phase, Phase::Offline);
    // Back online in the middle of a long backoff: the attempt is immediate.
    r.engine.network_changed(true);
    until(Duration::from_millis(100), "synced", || r.engine.status().pending == 0).await;
    r.api.fail(6, offline);
    r.engine.put("notes", "b", obj(json!({"t": 2}))).unwrap();
    until(Duration::from_secs(600), "6 failures", || r.api.seen().len() >= 7).await;
    until(Duration::from_secs(600), "backing off", || matches!(r.engine.status().phase, Phase::BackingOff { .. }))
        .await;
    let before = Instant::now();
    r.engine.network_changed(true);
    until(Duration::from_secs(5), "synced", || r.engine.status().pending == 0).await;
    assert!(Instant::now() - before < Duration::from_secs(1), "no waiting out the backoff");
    worker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_worker_never_gives_up_on_a_retryable_failure() {
    let r = rig();
    r.engine.put("notes", "a", obj(json!({"t": 1}))).unwrap();
    r.api.fail(200, offline);
    let worker = r.engine.start_worker(CONFIG).unwrap();
    until(Duration::from_secs(4 * 3600), "201 pushes", || r.api.seen().len() >= 201).await;
    until(Duration::from_secs(5), "synced", || r.engine.status().pending == 0).await;
    assert_eq!(r.engine.status().dead_letters, 0, "being offline is nobody's fault: no dead letters");
    worker.stop().await;
}

/// Tokens "t1", "t2", …; a refresh fails while `broken` is set.
struct Tokens {
    n: AtomicU32,
    refreshes: AtomicU32,
    broken: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl AuthProvider for Tokens {
    async fn token(&self) -> Result<String> {
        Ok(format!("t{}", self.n.load(Ordering::SeqCst)))
    }
    async fn refresh(&self) -> Result<String> {
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        if self.broken.load(Ordering::SeqCst) {
            return Err(Error::offline("the identity provider is unreachable"));
        }
        Ok(format!("t{}", self.n.fetch_add(1, Ordering::SeqCst) + 1))
    }
}

fn expired() -> Error {
    Error::Api(ApiError::new(Code::TokenExpired, "the token has expired"))
}

#[tokio::test(start_paused = true)]
async fn a_401_refreshes_the_token_and_resumes_the_same_batch() {
    let tokens = Arc::new(Tokens { n: AtomicU32::new(1), refreshes: AtomicU32::new(0), broken: Default::default() });
    let r = rig_with(EngineConfig::default(), Some(tokens.clone()));
    for i in 0..3 {
        r.engine.put("notes", &format!("n{i}"), obj(json!({"i": i}))).unwrap();
    }
    r.api.fail(1, expired);
    let worker = r.engine.start_worker(CONFIG).unwrap();
    until(Duration::from_secs(5), "synced", || r.engine.status().pending == 0).await;
    let seen = r.api.seen();
    assert_eq!(tokens.refreshes.load(Ordering::SeqCst), 1);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].key, seen[0].key, "the same batch under the same key");
    assert!(seen[1].at - seen[0].at < Duration::from_millis(100), "resumed at once, no backoff");
    // A refresh that fails: needs_auth, nothing dropped, no retries until the app says so.
    tokens.broken.store(true, Ordering::SeqCst);
    r.api.fail(1, expired);
    r.engine.put("notes", "later", obj(json!({"v": 1}))).unwrap();
    until(Duration::from_secs(5), "needs auth", || r.engine.status().phase == Phase::NeedsAuth).await;
    r.engine.put("notes", "later2", obj(json!({"v": 2}))).unwrap();
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(r.api.seen().len(), 3, "no attempts while it needs auth");
    assert_eq!(r.engine.status().pending, 2, "nothing dropped");
    tokens.broken.store(false, Ordering::SeqCst);
    r.engine.auth_changed();
    until(Duration::from_secs(5), "synced", || r.engine.status().pending == 0).await;
    let seen = r.api.seen();
    assert_eq!(seen[3].key, seen[2].key, "the refused batch resumes under its key");
    worker.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_poison_op_holds_back_only_itself_then_becomes_a_dead_letter_the_app_can_retry_or_discard() {
    let r = rig_with(EngineConfig { max_attempts: 3, ..EngineConfig::default() }, None);
    r.engine.put("notes", "poison", obj(json!({"t": "bad"}))).unwrap();
    for i in 0..120 {
        r.engine.put("notes", &format!("n{i:03}"), obj(json!({"i": i}))).unwrap();
    }
    let worker = r.engine.start_worker(CONFIG).unwrap();
    until(Duration::from_secs(3600), "a dead letter", || r.engine.status().dead_letters == 1).await;
    until(Duration::from_secs(600), "the rest synced", || r.engine.status().pending == 0).await;
    let seen = r.api.seen();
    let poisoned: Vec<&Seen> = seen.iter().filter(|s| !s.ok).collect();
    assert_eq!(poisoned.len(), 4, "the first batch, then the op alone until it is out of attempts: {seen:?}");
    assert!(poisoned[1..].iter().all(|s| s.ops == 1), "after one failure the op travels alone: {seen:?}");
    assert!(seen.iter().filter(|s| s.ok).map(|s| s.ops).sum::<usize>() == 120, "every other op went through");
    let held = r.engine.held_ops().unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!((held[0].record_id.as_str(), held[0].attempts), ("poison", 4));
    assert!(held[0].last_error.as_deref().unwrap().contains("internal"), "{:?}", held[0].last_error);
    let view = r.engine.get("notes", "poison").unwrap().unwrap();
    assert_eq!(view.state, converge_core::RecordState::Failed);
    assert_eq!(view.fields["t"], json!("bad"), "the value is still there");
    // Retry: it goes out again (and fails again, alone).
    r.engine.retry_op(held[0].op_id).unwrap();
    assert_eq!((r.engine.status().pending, r.engine.status().dead_letters), (1, 0));
    until(Duration::from_secs(3600), "dead again", || r.engine.status().dead_letters == 1).await;
    // Discard: gone from the outbox, kept in the journal.
    let op = r.engine.held_ops().unwrap().remove(0);
    r.engine.discard_op(op.op_id).unwrap();
    assert_eq!((r.engine.status().pending, r.engine.status().dead_letters), (0, 0));
    let journal = r.engine.journal().unwrap();
    let entry = journal.iter().find(|c| c.outcome == "discarded").expect("a journal row");
    assert_eq!((entry.record_id.as_str(), entry.losing["t"].clone()), ("poison", json!("bad")));
    assert!(r.engine.get("notes", "poison").unwrap().is_none(), "never on the server, nothing left");
    assert!(r.engine.retry_op(op.op_id).is_err(), "no such held op any more");
    worker.stop().await;
}

#[test]
fn a_worker_needs_a_runtime_and_only_one_runs_per_engine() {
    let r = rig();
    let err = r.engine.start_worker(CONFIG).err().expect("no runtime here");
    assert!(err.to_string().contains("tokio runtime"), "{err}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let first = r.engine.start_worker(CONFIG).unwrap();
        assert!(r.engine.start_worker(CONFIG).is_err(), "a second worker is refused");
        first.stop().await;
        let again = r.engine.start_worker(CONFIG).expect("a stopped worker can be started again");
        again.stop().await;
    });
}
