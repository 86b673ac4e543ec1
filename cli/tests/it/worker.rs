//! The background worker over real HTTP: a device whose worker syncs through the fault proxy to
//! a real `converge serve`, refreshing an expired token through its `AuthProvider`, riding out
//! dropped responses, cut bodies, 503s with Retry-After, and converging with nothing lost or
//! applied twice; and a notice stream cut by the proxy, polling meanwhile, then live again.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use converge_core::{AuthProvider, Engine, Notices, Phase, WorkerConfig};
use converge_http::client::HttpClient;
use converge_sqlite::SqliteStore;
use converge_test_support::{EVENTS_PATH, Fault, FaultProxy, obj};
use serde_json::json;

use crate::{device, server};

/// Hands out a token the server refuses first; a refresh gives a good one from `converge token`.
struct Tokens {
    current: Mutex<String>,
    fresh: String,
    refreshes: AtomicU32,
}

#[async_trait]
impl AuthProvider for Tokens {
    async fn token(&self) -> converge_core::Result<String> {
        Ok(self.current.lock().unwrap().clone())
    }
    async fn refresh(&self) -> converge_core::Result<String> {
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        *self.current.lock().unwrap() = self.fresh.clone();
        Ok(self.fresh.clone())
    }
}

async fn until(limit: Duration, what: &str, f: impl Fn() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_refreshes_its_token_rides_out_faults_and_converges_over_real_http() {
    let srv = server();
    let proxy = FaultProxy::start(srv.port).unwrap();
    let good = srv.token("acme", "alice").unwrap();
    let stale = "eyJhbGciOiJIUzI1NiJ9.e30.c3RhbGU".to_owned();
    let tokens = Arc::new(Tokens { current: Mutex::new(stale), fresh: good.clone(), refreshes: AtomicU32::new(0) });
    let dir = tempfile::tempdir().unwrap();
    let api = Arc::new(HttpClient::new(&proxy.url(), "unused").unwrap().with_auth(tokens.clone()));
    let store = SqliteStore::open(dir.path().join("a.db")).unwrap();
    let a = Engine::builder(Box::new(store)).api(api).auth(tokens.clone()).build().unwrap();
    // The real server refuses the stale token (401) on the first push; then
    // the proxy drops a response after the server applied it, cuts a body, answers 503.
    proxy.script(vec![
        Fault::Pass,
        Fault::DropResponse,
        Fault::CutBody,
        Fault::Unavailable { retry_after_secs: 1 },
        Fault::Duplicate,
    ]);
    for i in 0..120 {
        a.put("notes", &format!("n{i:03}"), obj(json!({"i": i}))).unwrap();
    }
    let config = WorkerConfig {
        debounce: Duration::from_millis(20),
        backoff_base: Duration::from_millis(50),
        backoff_cap: Duration::from_millis(500),
        poll_every: None,
        poll_while_live: false,
    };
    let worker = a.start_worker(config).unwrap();
    until(Duration::from_secs(30), "the outbox drained", || a.status().pending == 0).await;
    // Writes keep flowing to the running worker.
    for i in 0..10 {
        a.patch("notes", &format!("n{i:03}"), obj(json!({"edited": true}))).unwrap();
    }
    until(Duration::from_secs(30), "the edits synced", || a.status().pending == 0).await;
    until(Duration::from_secs(5), "idle", || a.status().phase == Phase::Idle).await;
    worker.stop().await;

    assert_eq!(tokens.refreshes.load(Ordering::SeqCst), 1, "one refresh after the 401");
    let log = proxy.log();
    let pushes: Vec<_> = log.iter().filter(|s| s.path == "/v1/sync/mutations").collect();
    assert_eq!(pushes[0].upstream_status, Some(401), "the server refused the stale token: {pushes:?}");
    assert_eq!(pushes[1].idempotency_key, pushes[0].idempotency_key, "the refused batch resumed under its key");
    assert_eq!(pushes[2].idempotency_key, pushes[1].idempotency_key, "the unanswered batch is resent as it was");
    assert!(pushes.iter().all(|p| p.traceparent.is_some()), "every request carries its cycle's traceparent");
    // Nothing lost, nothing applied twice: a fresh device sees every record at its exact version.
    let b = device(dir.path(), "b", &srv.url(), &good);
    b.sync_once().await.unwrap();
    let list = b.list("notes").unwrap();
    assert_eq!(list.len(), 120);
    for (i, r) in list.iter().enumerate() {
        let edited = i < 10;
        assert_eq!(r.version, if edited { 2 } else { 1 }, "{} applied once per write", r.record_id);
        assert_eq!(r.fields.get("edited").is_some(), edited);
    }
    let m = a.metrics();
    assert_eq!(m.raw.entities["notes"].answered, 130);
    assert!(m.success_rate.unwrap() < 1.0, "the failed cycles count: {m:?}");
    assert!(m.retries.iter().skip(1).sum::<u64>() == 0, "attempts count server errors only: {m:?}");
}

fn holds(engine: &Engine, id: &str, title: &str) -> bool {
    engine.get("notes", id).unwrap().is_some_and(|r| r.fields.get("title") == Some(&json!(title)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_notice_stream_falls_back_to_polling_and_recovers() {
    let srv = server();
    let proxy = FaultProxy::start(srv.port).unwrap();
    let token = srv.token("acme", "alice").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = device(dir.path(), "a", &srv.url(), &token);
    let b = device(dir.path(), "b", &proxy.url(), &token);
    let config = WorkerConfig {
        debounce: Duration::ZERO,
        backoff_base: Duration::from_millis(50),
        backoff_cap: Duration::from_millis(500),
        poll_every: Some(Duration::from_millis(300)),
        poll_while_live: false,
    };
    let worker = b.start_worker(config).unwrap();
    until(Duration::from_secs(20), "b live", || b.status().notices == Notices::Live).await;
    a.put("notes", "n0", obj(json!({"title": "heard"}))).unwrap();
    a.sync_once().await.unwrap();
    until(Duration::from_secs(20), "b heard a's write", || holds(&b, "n0", "heard")).await;

    // The stream is cut and new ones are dropped: b says so and polls.
    proxy.block_streams(true);
    proxy.cut_streams();
    until(Duration::from_secs(20), "b polling", || b.status().notices == Notices::Polling).await;
    a.put("notes", "n1", obj(json!({"title": "while cut"}))).unwrap();
    a.sync_once().await.unwrap();
    until(Duration::from_secs(20), "b polled a's write", || holds(&b, "n1", "while cut")).await;
    assert_eq!(b.status().notices, Notices::Polling, "no stream got through");

    // Streams pass again: b subscribes again by itself.
    proxy.block_streams(false);
    until(Duration::from_secs(20), "b live again", || b.status().notices == Notices::Live).await;
    a.put("notes", "n2", obj(json!({"title": "live again"}))).unwrap();
    a.sync_once().await.unwrap();
    until(Duration::from_secs(20), "b holds the next write", || holds(&b, "n2", "live again")).await;
    worker.stop().await;
    let streams = proxy.log().iter().filter(|s| s.path == EVENTS_PATH).count();
    assert!(streams >= 3, "the first stream, refused attempts, the one that got through: {streams}");
}
