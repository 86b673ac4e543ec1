//! Priorities under pressure: many devices on loopback overload a `converge serve` with small
//! limits. Batches of the critical entity type are all admitted and go first on every device;
//! the others are told to back off (429/503 with Retry-After), come back, and converge; nothing
//! is lost and no request waits without bound.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use converge_core::api::Subscription;
use converge_core::wire::{Change, PullRequest, PullResponse, PushRequest, PushResponse};
use converge_core::{Engine, EngineConfig, Error, Priority, StaticToken, SyncApi};
use converge_sqlite::SqliteStore;
use converge_test_support::ServerProcess;
use serde_json::json;

use crate::bin;

/// What one push met: whether its batch was all critical, its answer's status, how long it took.
#[derive(Debug, Clone)]
struct Sent {
    critical: bool,
    status: u16,
    took: Duration,
}

/// A transport that writes down every push it forwards.
struct Recording {
    api: Arc<dyn SyncApi>,
    log: Mutex<Vec<Sent>>,
}

#[async_trait]
impl SyncApi for Recording {
    async fn push(&self, req: PushRequest) -> converge_core::Result<PushResponse> {
        let critical = req.batch.mutations.iter().all(|m| m.entity == "payments");
        let started = Instant::now();
        let answer = self.api.push(req).await;
        let status = match &answer {
            Ok(_) => 200,
            Err(Error::Api(e)) => e.code.http_status(),
            Err(_) => 0,
        };
        self.log.lock().unwrap().push(Sent { critical, status, took: started.elapsed() });
        answer
    }
    async fn pull(&self, req: PullRequest) -> converge_core::Result<PullResponse> {
        self.api.pull(req).await
    }
    async fn record(&self, entity: &str, record_id: &str) -> converge_core::Result<Change> {
        self.api.record(entity, record_id).await
    }
    async fn subscribe(&self, cursor: Option<String>) -> converge_core::Result<Subscription> {
        self.api.subscribe(cursor).await
    }
}

const DEVICES: usize = 12;
const TENANTS: usize = 3;
const PAYMENTS: usize = 6;
const NOTES: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn critical_batches_are_admitted_first_and_the_rest_backs_off_and_converges() {
    let srv = ServerProcess::start_with(
        bin(),
        &[
            // Room for every device's critical batches at once (12) beside the normal pushes the
            // per-tenant limit lets run (3 tenants x 2), and not much more.
            "--max-inflight",
            "20",
            "--max-inflight-per-tenant",
            "2",
            "--rate",
            "10",
            "--critical",
            "payments",
        ],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut devices = Vec::new();
    for d in 0..DEVICES {
        let token = srv.token(&format!("t{}", d % TENANTS), &format!("u{d}")).unwrap();
        let api = converge_connect::connect(&srv.url(), Arc::new(StaticToken(token))).unwrap();
        let recording = Arc::new(Recording { api, log: Mutex::new(Vec::new()) });
        let store = SqliteStore::open(dir.path().join(format!("d{d}.db"))).unwrap();
        let engine = Engine::builder(Box::new(store))
            .api(recording.clone())
            .config(EngineConfig { batch_size: 5, ..EngineConfig::default() })
            .priority("payments", Priority::Critical)
            .build()
            .unwrap();
        // Offline: notes first, then payments, so only the priority puts payments ahead.
        for i in 0..NOTES {
            engine.put("notes", &format!("d{d}-n{i}"), json!({"i": i}).as_object().unwrap().clone()).unwrap();
        }
        for i in 0..PAYMENTS {
            engine.put("payments", &format!("d{d}-p{i}"), json!({"cents": i}).as_object().unwrap().clone()).unwrap();
        }
        devices.push((engine, recording));
    }

    // Every device syncs at once and keeps at it, waiting as long as the server says, until its
    // outbox is empty.
    let started = Instant::now();
    let runs = devices.iter().map(|(engine, _)| {
        let engine = engine.clone();
        tokio::spawn(async move {
            let mut backed_off = 0u32;
            loop {
                match engine.sync_once().await {
                    Ok(_) if engine.status().pending == 0 => return backed_off,
                    Ok(_) => {}
                    Err(Error::Api(e)) if e.retry_after.is_some() => {
                        backed_off += 1;
                        tokio::time::sleep(e.retry_after.unwrap_or_default()).await;
                    }
                    Err(e) => panic!("a sync failed for another reason: {e}"),
                }
                assert!(started.elapsed() < Duration::from_secs(120), "no convergence after 120 s");
            }
        })
    });
    let mut backoffs = 0;
    for run in runs.collect::<Vec<_>>() {
        backoffs += run.await.unwrap();
    }
    let converged = started.elapsed();

    let (mut critical_ok, mut normal_ok, mut shed, mut slowest) = (0, 0, 0, Duration::ZERO);
    for (d, (_, recording)) in devices.iter().enumerate() {
        let log = recording.log.lock().unwrap();
        for sent in log.iter() {
            slowest = slowest.max(sent.took);
            match (sent.critical, sent.status) {
                (true, 200) => critical_ok += 1,
                (true, status) => panic!("device {d}: a critical batch was answered {status}"),
                (false, 200) => normal_ok += 1,
                (false, 429 | 503) => shed += 1,
                (false, status) => panic!("device {d}: a push was answered {status}"),
            }
        }
        // On each device every payment went out before any note was accepted.
        let first_note = log.iter().position(|s| !s.critical && s.status == 200).unwrap();
        assert!(log[..first_note].iter().filter(|s| s.critical).count() * 5 >= PAYMENTS, "device {d}: {log:?}");
        assert!(log[first_note..].iter().all(|s| !s.critical), "device {d}: a payment after a note: {log:?}");
    }
    assert!(shed > 0, "the limits never bit: no push was told to back off");
    assert!(slowest < Duration::from_secs(10), "a push waited {slowest:?}");

    // Nothing lost: every tenant's feed holds each of its devices' records once.
    for t in 0..TENANTS {
        let reader =
            crate::device(dir.path(), &format!("reader{t}"), &srv.url(), &srv.token(&format!("t{t}"), "r").unwrap());
        reader.sync_once().await.unwrap();
        let per_tenant = DEVICES / TENANTS;
        assert_eq!(reader.list("notes").unwrap().len(), per_tenant * NOTES, "tenant t{t}");
        assert_eq!(reader.list("payments").unwrap().len(), per_tenant * PAYMENTS, "tenant t{t}");
    }
    eprintln!(
        "overload: {DEVICES} devices, {critical_ok} critical pushes all admitted, {normal_ok} others accepted, \
         {shed} shed with 429/503 ({backoffs} back-offs), slowest push {slowest:?}, converged in {converged:?}"
    );
}
