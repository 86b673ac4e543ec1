//! Live sync through change notices, against the real service on a SQLite file: a write on one
//! device reaches another that never polls; a server without notices leaves the worker polling;
//! the first write of an idle worker goes at once; a device's own push costs no extra cycle.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use converge_core::wire::Limits;
use converge_core::{
    Change, Engine, Error, Notices, PullRequest, PullResponse, PushRequest, PushResponse, Result, Scope, Subscription,
    SyncApi, Tenancy, WorkerConfig,
};
use converge_server::{SqliteServerStore, SyncService};
use converge_sqlite::SqliteStore;
use converge_test_support::obj;
use serde_json::json;
use tokio::time::Instant;

/// The service, counting pulls and subscriptions; `notices: false` plays a server without them.
struct Counting {
    inner: Arc<dyn SyncApi>,
    notices: bool,
    pulls: AtomicU32,
    subscribes: AtomicU32,
}

#[async_trait]
impl SyncApi for Counting {
    async fn push(&self, req: PushRequest) -> Result<PushResponse> {
        self.inner.push(req).await
    }

    async fn pull(&self, req: PullRequest) -> Result<PullResponse> {
        self.pulls.fetch_add(1, Ordering::SeqCst);
        self.inner.pull(req).await
    }

    async fn record(&self, entity: &str, record_id: &str) -> Result<Change> {
        self.inner.record(entity, record_id).await
    }

    async fn subscribe(&self, cursor: Option<String>) -> Result<Subscription> {
        self.subscribes.fetch_add(1, Ordering::SeqCst);
        if !self.notices {
            return Err(Error::Unsupported("this server predates notices".into()));
        }
        self.inner.subscribe(cursor).await
    }
}

struct Server {
    dir: tempfile::TempDir,
    service: SyncService,
}

fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteServerStore::open(&dir.path().join("server.db")).unwrap();
    Server { service: SyncService::new(Arc::new(store), Limits::default()), dir }
}

fn device(server: &Server, name: &str, notices: bool) -> (Engine, Arc<Counting>) {
    let api = Arc::new(Counting {
        inner: server.service.scoped(Scope::new("acme", name)),
        notices,
        pulls: AtomicU32::new(0),
        subscribes: AtomicU32::new(0),
    });
    let store = SqliteStore::open(server.dir.path().join(format!("{name}.db"))).unwrap();
    (Engine::builder(Box::new(store)).api(api.clone()).build().unwrap(), api)
}

/// Waits until `f` holds, checking every 10 ms, for at most `limit`.
async fn until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn holds(engine: &Engine, id: &str, title: &str) -> bool {
    engine.get("notes", id).unwrap().is_some_and(|r| r.fields.get("title") == Some(&json!(title)))
}

const NEVER_POLL: WorkerConfig = WorkerConfig {
    debounce: Duration::ZERO,
    backoff_base: Duration::from_millis(100),
    backoff_cap: Duration::from_secs(2),
    poll_every: None,
    poll_while_live: false,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_reaches_a_device_that_never_polls() {
    let server = server();
    let (a, _) = device(&server, "a", true);
    let (b, b_api) = device(&server, "b", true);
    let wa = a.start_worker(NEVER_POLL).unwrap();
    let wb = b.start_worker(NEVER_POLL).unwrap();
    until(Duration::from_secs(20), "both live", || {
        a.status().notices == Notices::Live && b.status().notices == Notices::Live
    })
    .await;
    for i in 0..5 {
        let title = format!("v{i}");
        a.put("notes", "n1", obj(json!({"title": title}))).unwrap();
        until(Duration::from_secs(20), "b holds a's write", || holds(&b, "n1", &title)).await;
    }
    assert_eq!(b_api.subscribes.load(Ordering::SeqCst), 1, "one subscription, kept open");
    wa.stop().await;
    wb.stop().await;
    assert_eq!(b.status().notices, Notices::Off, "no worker, no notices");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_notices_the_worker_polls() {
    let server = server();
    let (a, _) = device(&server, "a", true);
    let (b, b_api) = device(&server, "b", false);
    let polling = WorkerConfig { poll_every: Some(Duration::from_millis(200)), ..NEVER_POLL };
    let wb = b.start_worker(polling).unwrap();
    until(Duration::from_secs(20), "b polling", || b.status().notices == Notices::Polling).await;
    a.put("notes", "n1", obj(json!({"title": "hello"}))).unwrap();
    a.sync_once().await.unwrap();
    until(Duration::from_secs(20), "b polled a's write", || holds(&b, "n1", "hello")).await;
    assert_eq!(b_api.subscribes.load(Ordering::SeqCst), 1, "asked once, then polls for good");
    wb.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_first_write_of_an_idle_worker_goes_at_once_and_its_own_push_costs_no_extra_cycle() {
    let server = server();
    let (a, api) = device(&server, "a", true);
    let worker = a.start_worker(WorkerConfig { poll_every: None, ..WorkerConfig::default() }).unwrap();
    until(Duration::from_secs(60), "live and idle", || {
        a.status().notices == Notices::Live && a.status().phase == converge_core::Phase::Idle
    })
    .await;
    let pulls_before = api.pulls.load(Ordering::SeqCst);
    let written = Instant::now();
    a.put("notes", "n1", obj(json!({"title": "now"}))).unwrap();
    until(Duration::from_secs(60), "pushed", || a.status().pending == 0).await;
    // On tokio's paused clock time only moves while every task waits: the push went without
    // any timer of the worker's running first.
    assert!(written.elapsed() < Duration::from_millis(20), "the write waited {:?}", written.elapsed());
    // Its own push comes back as a notice; the device already pulled to there.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(api.pulls.load(Ordering::SeqCst), pulls_before + 1, "one cycle, one pull");
    worker.stop().await;
}
