//! PostgreSQL restarted under load: while it is down the server answers 503 `unavailable` with
//! Retry-After, and once it is back the same server process serves again by itself; a device
//! that wrote throughout loses nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use converge_server::{PgOptions, PgServerStore};
use converge_test_support::{obj, pg};
use serde_json::json;

use crate::idempotency::{batch, mutation, push, uuid};
use crate::{device, pg_server_on};

/// Starts the restart cluster again however the test ends.
struct StartAgain;

impl Drop for StartAgain {
    fn drop(&mut self) {
        if let Err(e) = pg::restart_cluster("start") {
            eprintln!("cannot start the restart cluster again: {e:#}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load_answers_503_with_retry_after_and_recovers_with_nothing_lost() {
    let db = pg::fresh_url_in(&pg::restart_base_url());
    let node = pg_server_on(&db);
    let token = node.token("acme", "alice").unwrap();
    let dir = tempfile::tempdir().unwrap();

    // A device writes and syncs throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (dev, stop, written) = (device(dir.path(), "d", &node.url(), &token), stop.clone(), written.clone());
        tokio::spawn(async move {
            let mut failures = 0;
            while !stop.load(Ordering::SeqCst) {
                let i = written.fetch_add(1, Ordering::SeqCst);
                dev.put("notes", &format!("n{i:05}"), obj(json!({"i": i}))).unwrap();
                if dev.sync_once().await.is_err() {
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            (dev, failures)
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;

    let _start_again = StartAgain;
    pg::restart_cluster("stop").unwrap();
    let answer =
        push(&node.url(), Some(&token), Some(&uuid()), batch(vec![mutation(&uuid(), "x", "create", 0, json!({}))]))
            .await;
    assert_eq!(answer.status, 503, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.code(), "unavailable");
    assert!(answer.headers.get("retry-after").is_some(), "503 says when to retry");
    assert_eq!(answer.headers.get("content-type").unwrap(), "application/problem+json");
    tokio::time::sleep(Duration::from_millis(700)).await;
    pg::restart_cluster("start").unwrap();

    // The same process serves again once PostgreSQL is back.
    let back = Instant::now();
    loop {
        let answer = push(
            &node.url(),
            Some(&token),
            Some(&uuid()),
            batch(vec![mutation(&uuid(), &uuid(), "create", 0, json!({}))]),
        )
        .await;
        if answer.status == 200 {
            break;
        }
        assert_eq!(answer.status, 503, "only `unavailable` while it reconnects");
        assert!(back.elapsed() < Duration::from_secs(30), "the server did not recover within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("served again {:?} after PostgreSQL started", back.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let (dev, failures) = writer.await.unwrap();
    assert!(failures > 0, "the device saw the outage");
    let deadline = Instant::now() + Duration::from_secs(30);
    while dev.status().pending > 0 {
        let _ = dev.sync_once().await;
        assert!(Instant::now() < deadline, "the device could not finish syncing");
    }
    let n = written.load(Ordering::SeqCst);
    let store = PgServerStore::connect(&db, &PgOptions { pool_size: 1, ..PgOptions::default() }).await.unwrap();
    let stats = store.stats("acme").await.unwrap();
    // Every note the device wrote, and the probe pushes: each once.
    assert_eq!(stats.version_sum, stats.seq);
    let notes = dev.list("notes").unwrap();
    assert_eq!(notes.iter().filter(|r| r.record_id.starts_with('n')).count() as u64, n);
    for r in notes.iter().filter(|r| r.record_id.starts_with('n')) {
        assert_eq!(r.state, converge_core::RecordState::Synced, "{}", r.record_id);
    }
    eprintln!("{n} notes written across the restart, {failures} failed syncs, none lost");
}
