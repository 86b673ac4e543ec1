//! Kill -9 of the server in the middle of a push loop: after a restart and another sync, no op
//! is applied twice, none is lost, and the change feed has no gap.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use converge_core::PullRequest;
use converge_test_support::obj;
use serde_json::json;

use crate::{device, server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_the_server_mid_push_over_http_restart_and_nothing_is_lost_or_doubled() {
    kill_the_server_mid_push(Wire::Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_the_server_mid_push_over_grpc_restart_and_nothing_is_lost_or_doubled() {
    kill_the_server_mid_push(Wire::Grpc).await;
}

#[derive(Clone, Copy)]
enum Wire {
    Http,
    Grpc,
}

async fn kill_the_server_mid_push(wire: Wire) {
    let mut srv = server();
    let url = match wire {
        Wire::Http => srv.url(),
        Wire::Grpc => srv.grpc_url(),
    };
    let token = srv.token("acme", "alice").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = device(dir.path(), "a", &url, &token);
    const N: usize = 1500;
    let ids: Vec<String> =
        (0..N).map(|i| a.create("notes", obj(json!({"i": i, "title": "created"}))).unwrap().record_id).collect();
    a.sync_once().await.unwrap();
    // Every record gets one update; push them and kill the server part way through.
    for id in &ids {
        a.patch("notes", id, obj(json!({"title": "updated"}))).unwrap();
    }
    let mut watch = a.watch_status();
    let syncing = tokio::spawn({
        let a = a.clone();
        async move { a.sync_once().await }
    });
    // Once two batches are acknowledged, hold the server's write lock so the next batch is
    // stuck inside the server, then kill -9 it with that batch in flight.
    loop {
        watch.changed().await.unwrap();
        let p = watch.borrow().pending;
        if p <= (N as u64) - 100 {
            break;
        }
    }
    let lock = rusqlite::Connection::open(srv.db_path()).unwrap();
    lock.busy_timeout(Duration::from_secs(5)).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    srv.kill().unwrap();
    lock.execute_batch("ROLLBACK").unwrap();
    drop(lock);
    let first = syncing.await.unwrap();
    assert!(first.is_err(), "the cycle cannot finish with the server gone");
    assert!(a.status().pending > 0, "some ops are still unacknowledged");
    let left_over = a.status().pending;

    // Offline: another sync fails cleanly and keeps everything.
    assert!(a.sync_once().await.is_err());
    assert_eq!(a.status().pending, left_over);

    srv.restart().unwrap();
    let mut done = false;
    for _ in 0..20 {
        if a.sync_once().await.is_ok() {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(done, "sync resumes after the restart");
    assert_eq!(a.status().pending, 0);

    // The feed from the start: every record once, each at version 2 (one create, one update).
    let api = converge_connect::connect(&url, Arc::new(converge_core::StaticToken(token.clone()))).unwrap();
    let mut cursor = None;
    let mut seen = HashSet::new();
    let mut versions = 0u64;
    loop {
        let page = api.pull(PullRequest { cursor: cursor.clone(), limit: Some(1000) }).await.unwrap();
        for ch in &page.changes {
            assert!(seen.insert(ch.record_id.clone()), "record {} twice in the feed", ch.record_id);
            assert_eq!(ch.version, 2, "record {} applied {} times", ch.record_id, ch.version);
            assert_eq!(ch.fields["title"], json!("updated"));
            versions += ch.version;
        }
        cursor = Some(page.cursor);
        if !page.has_more {
            break;
        }
    }
    assert_eq!(seen.len(), N, "no record lost");
    assert_eq!(versions, 2 * N as u64);
    // The change sequence counted exactly one number per applied change: no gap, no double.
    let conn = rusqlite::Connection::open(srv.db_path()).unwrap();
    let seq: i64 = conn.query_row("SELECT seq FROM counters WHERE tenant = 'acme'", [], |r| r.get(0)).unwrap();
    assert_eq!(seq as u64, versions, "the sequence counter equals the number of applied changes");

    // A fresh device pulls everything and agrees.
    let b = device(dir.path(), "b", &url, &token);
    b.sync_once().await.unwrap();
    let lb = b.list("notes").unwrap();
    assert_eq!(lb.len(), N);
    assert!(lb.iter().all(|r| r.fields["title"] == json!("updated") && r.version == 2));
}
