//! What runs where: a slow merge policy never holds up the app's writes, and a sync cycle does
//! its store work off the app's async runtime.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use converge_core::policy::{MergeInput, MergePolicy, Resolution};
use converge_core::store::{
    ConflictRecord, DeviceState, LocalRecord, LocalStore, OutboxOp, StoreRead, StoreTx, Summary,
};
use converge_core::wire::Limits;
use converge_core::{Engine, Hlc, Result, Scope, Tenancy};
use converge_server::{SqliteServerStore, SyncService};
use converge_sqlite::SqliteStore;
use converge_test_support::obj;
use serde_json::json;
use uuid::Uuid;

/// Takes the local side, but only once the test lets it go; says when it starts.
struct Gate {
    started: Mutex<Option<mpsc::Sender<()>>>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl MergePolicy for Gate {
    fn name(&self) -> &str {
        "gate"
    }
    fn resolve(&self, _: &MergeInput<'_>) -> Resolution {
        if let Some(tx) = self.started.lock().unwrap().take() {
            tx.send(()).unwrap();
            let _ = self.release.lock().unwrap().recv_timeout(Duration::from_secs(60));
        }
        Resolution::TakeLocal
    }
}

fn service(dir: &std::path::Path) -> Arc<dyn converge_core::SyncApi> {
    let store = SqliteServerStore::open(&dir.join("server.db")).unwrap();
    SyncService::new(Arc::new(store), Limits::default()).scoped(Scope::new("acme", "u"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_policy_never_holds_up_the_apps_writes() {
    let dir = tempfile::tempdir().unwrap();
    let api = service(dir.path());
    let (started_tx, started) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let gate = Arc::new(Gate { started: Mutex::new(Some(started_tx)), release: Mutex::new(release_rx) });
    let a = Engine::builder(Box::new(SqliteStore::open(dir.path().join("a.db")).unwrap()))
        .api(api.clone())
        .policy("notes", gate)
        .build()
        .unwrap();
    let b = Engine::builder(Box::new(SqliteStore::open(dir.path().join("b.db")).unwrap())).api(api).build().unwrap();
    a.put("notes", "n", obj(json!({"title": "t0"}))).unwrap();
    a.sync_once().await.unwrap();
    b.sync_once().await.unwrap();
    b.patch("notes", "n", obj(json!({"title": "b"}))).unwrap();
    b.sync_once().await.unwrap();
    a.patch("notes", "n", obj(json!({"title": "a"}))).unwrap();
    let syncing = tokio::spawn({
        let a = a.clone();
        async move { a.sync_once().await }
    });
    started.recv_timeout(Duration::from_secs(30)).expect("the policy is asked");
    // The policy is running now, and stays so until released. The app writes meanwhile, from a
    // thread of its own; a write that waited for the policy would never return.
    let writer = {
        let a = a.clone();
        std::thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            for i in 0..100 {
                let t = Instant::now();
                a.put("todos", &format!("t{i}"), obj(json!({"i": i}))).unwrap();
                slowest = slowest.max(t.elapsed());
            }
            slowest
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !writer.is_finished() {
        assert!(Instant::now() < deadline, "the app's writes waited for the merge policy");
        std::thread::sleep(Duration::from_millis(5));
    }
    let slowest = writer.join().unwrap();
    eprintln!("100 writes while the policy ran; the slowest took {slowest:?}");
    release.send(()).unwrap();
    let report = syncing.await.unwrap().unwrap();
    assert_eq!(report.conflicts, 1);
    assert_eq!(a.journal().unwrap()[0].policy, "gate", "the policy's answer was used");
    assert_eq!(a.list("todos").unwrap().len(), 100);
}

/// A device store that notes the thread of every call, around the real one.
struct Watched {
    inner: SqliteStore,
    threads: Arc<Mutex<Vec<ThreadId>>>,
    calls: Arc<AtomicUsize>,
}

impl Watched {
    fn note(&self) {
        self.threads.lock().unwrap().push(std::thread::current().id());
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

impl StoreRead for Watched {
    fn device_state(&self) -> Result<DeviceState> {
        self.note();
        self.inner.device_state()
    }
    fn max_outbox_hlc(&self) -> Result<Option<Hlc>> {
        self.note();
        self.inner.max_outbox_hlc()
    }
    fn record(&self, entity: &str, record_id: &str) -> Result<Option<LocalRecord>> {
        self.note();
        self.inner.record(entity, record_id)
    }
    fn list(&self, entity: &str) -> Result<Vec<LocalRecord>> {
        self.note();
        self.inner.list(entity)
    }
    fn record_ops(&self, entity: &str, record_id: &str) -> Result<Vec<OutboxOp>> {
        self.note();
        self.inner.record_ops(entity, record_id)
    }
    fn in_flight(&self) -> Result<Vec<OutboxOp>> {
        self.note();
        self.inner.in_flight()
    }
    fn next_ops(&self, limit: usize, first: &[String]) -> Result<Vec<OutboxOp>> {
        self.note();
        self.inner.next_ops(limit, first)
    }
    fn summary(&self) -> Result<Summary> {
        self.note();
        self.inner.summary()
    }
    fn oldest_pending_ms(&self) -> Result<Option<u64>> {
        self.note();
        self.inner.oldest_pending_ms()
    }
    fn held_ops(&self) -> Result<Vec<OutboxOp>> {
        self.note();
        self.inner.held_ops()
    }
    fn op(&self, op_id: Uuid) -> Result<Option<OutboxOp>> {
        self.note();
        self.inner.op(op_id)
    }
    fn conflicts(&self, open: bool) -> Result<Vec<ConflictRecord>> {
        self.note();
        self.inner.conflicts(open)
    }
    fn conflict(&self, id: i64) -> Result<Option<ConflictRecord>> {
        self.note();
        self.inner.conflict(id)
    }
    fn snapshot_active(&self) -> Result<bool> {
        self.note();
        self.inner.snapshot_active()
    }
    fn data_version(&self) -> Result<u64> {
        self.note();
        self.inner.data_version()
    }
}

impl LocalStore for Watched {
    fn transact(&mut self, f: &mut dyn FnMut(&mut dyn StoreTx) -> Result<()>) -> Result<()> {
        self.note();
        self.inner.transact(f)
    }
    fn checkpoint(&mut self) -> Result<()> {
        self.note();
        self.inner.checkpoint()
    }
}

#[test]
fn a_sync_cycle_does_its_store_work_off_the_apps_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let api = service(dir.path());
    let threads = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicUsize::new(0));
    let store = Watched { inner: SqliteStore::open(dir.path().join("a.db")).unwrap(), threads: threads.clone(), calls };
    let a = Engine::builder(Box::new(store)).api(api.clone()).build().unwrap();
    let b = Engine::builder(Box::new(SqliteStore::open(dir.path().join("b.db")).unwrap())).api(api).build().unwrap();
    for i in 0..120 {
        a.put("notes", &format!("a{i}"), obj(json!({"i": i}))).unwrap();
        b.put("notes", &format!("b{i}"), obj(json!({"i": i}))).unwrap();
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(b.sync_once()).unwrap();
    threads.lock().unwrap().clear();
    // The app's runtime is this thread: a cycle that pushes three batches, pulls and settles.
    let report = rt.block_on(a.sync_once()).unwrap();
    assert_eq!((report.batches, report.accepted, report.pulled), (3, 120, 240));
    let seen = threads.lock().unwrap().clone();
    assert!(seen.len() > 10, "the store was used: {} calls", seen.len());
    let here = std::thread::current().id();
    let on_runtime = seen.iter().filter(|t| **t == here).count();
    assert_eq!(on_runtime, 0, "{on_runtime} of {} store calls ran on the app's runtime thread", seen.len());
}
