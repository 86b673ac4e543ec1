//! Two devices with stores on disk and a real server process: offline edits, sync, merge,
//! conflict, convergence.

use converge_core::{Engine, RecordState, SyncApi};
use std::sync::Arc;

use converge_test_support::ServerProcess;
use converge_test_support::obj;
use serde_json::json;

use crate::{device, server};

/// Asserts both devices hold exactly the server's records for `entity`.
async fn assert_converged(a: &Engine, b: &Engine, api: &Arc<dyn SyncApi>, entity: &str) {
    let la = a.list(entity).unwrap();
    let lb = b.list(entity).unwrap();
    assert_eq!(la.len(), lb.len(), "devices hold different record counts");
    for (ra, rb) in la.iter().zip(&lb) {
        assert_eq!(ra.record_id, rb.record_id);
        assert_eq!(ra.fields, rb.fields, "views differ on {}", ra.record_id);
        assert_eq!(ra.state, RecordState::Synced);
        assert_eq!(rb.state, RecordState::Synced);
        let on_server = api.record(entity, &ra.record_id).await.unwrap();
        assert_eq!(on_server.fields, ra.fields, "device differs from the server on {}", ra.record_id);
        assert_eq!(on_server.version, ra.version);
        assert_eq!(on_server.version, rb.version);
    }
}

/// The URL of each wire a test runs over.
fn wires(srv: &ServerProcess) -> [String; 2] {
    [srv.url(), srv.grpc_url()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_edit_offline_sync_merge_conflict_and_converge_over_http() {
    let srv = server();
    two_devices_edit_offline_sync_merge_conflict_and_converge(&srv, &wires(&srv)[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_edit_offline_sync_merge_conflict_and_converge_over_grpc() {
    let srv = server();
    two_devices_edit_offline_sync_merge_conflict_and_converge(&srv, &wires(&srv)[1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_edit_offline_sync_merge_conflict_and_converge_on_postgres_over_http() {
    let srv = crate::pg_server();
    two_devices_edit_offline_sync_merge_conflict_and_converge(&srv, &wires(&srv)[0]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_edit_offline_sync_merge_conflict_and_converge_on_postgres_over_grpc() {
    let srv = crate::pg_server();
    two_devices_edit_offline_sync_merge_conflict_and_converge(&srv, &wires(&srv)[1]).await;
}

async fn two_devices_edit_offline_sync_merge_conflict_and_converge(srv: &ServerProcess, url: &str) {
    let token = srv.token("acme", "alice").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = device(dir.path(), "a", url, &token);
    let b = device(dir.path(), "b", url, &token);
    let api = converge_connect::connect(url, Arc::new(converge_core::StaticToken(token.clone()))).unwrap();

    // Offline creates on both devices.
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(a.create("notes", obj(json!({"title": format!("a{i}"), "body": "", "n": i}))).unwrap().record_id);
    }
    for i in 0..3 {
        ids.push(b.create("notes", obj(json!({"title": format!("b{i}"), "body": ""}))).unwrap().record_id);
    }
    assert_eq!(a.status().pending, 5);
    a.sync_once().await.unwrap();
    b.sync_once().await.unwrap();
    a.sync_once().await.unwrap();
    assert_eq!(a.list("notes").unwrap().len(), 8);
    assert_converged(&a, &b, &api, "notes").await;

    // Different fields of one record: merged without a conflict.
    a.patch("notes", &ids[0], obj(json!({"title": "title from a"}))).unwrap();
    b.patch("notes", &ids[0], obj(json!({"body": "body from b"}))).unwrap();
    a.sync_once().await.unwrap();
    let rb = b.sync_once().await.unwrap();
    assert_eq!(rb.conflicts, 0);
    a.sync_once().await.unwrap();
    let merged = a.get("notes", &ids[0]).unwrap().unwrap();
    assert_eq!(merged.fields["title"], json!("title from a"));
    assert_eq!(merged.fields["body"], json!("body from b"));
    assert_converged(&a, &b, &api, "notes").await;

    // The same field on both: a conflict, kept in the conflicts table, nothing lost.
    a.patch("notes", &ids[1], obj(json!({"title": "A wins the race"}))).unwrap();
    b.patch("notes", &ids[1], obj(json!({"title": "B comes second"}))).unwrap();
    a.sync_once().await.unwrap();
    let rb = b.sync_once().await.unwrap();
    assert_eq!(rb.conflicts, 1);
    let open = b.conflicts().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].record_id, ids[1]);
    assert_eq!(open[0].fields, vec!["title".to_string()]);
    assert_eq!(open[0].local["title"], json!("B comes second"), "the losing local value is kept");
    assert_eq!(open[0].server["title"], json!("A wins the race"));
    assert_eq!(b.status().open_conflicts, 1);
    assert_eq!(b.get("notes", &ids[1]).unwrap().unwrap().state, RecordState::Conflict);
    // Sync is quiet: both views equal the server's (the local intent waits in the conflicts table).
    a.sync_once().await.unwrap();
    assert_eq!(b.get("notes", &ids[1]).unwrap().unwrap().fields["title"], json!("A wins the race"));

    // The user keeps the local value: a new op on the server's version; everyone converges on it.
    b.resolve(open[0].id, converge_core::Choice::KeepLocal).unwrap();
    assert_eq!(b.status().open_conflicts, 0);
    b.sync_once().await.unwrap();
    a.sync_once().await.unwrap();
    assert_eq!(a.get("notes", &ids[1]).unwrap().unwrap().fields["title"], json!("B comes second"));
    let journal = b.journal().unwrap();
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].outcome, "take_local");
    assert_eq!(journal[0].losing["title"], json!("A wins the race"), "the overwritten value is journaled");

    // A delete travels too.
    a.delete("notes", &ids[2]).unwrap();
    a.sync_once().await.unwrap();
    b.sync_once().await.unwrap();
    assert!(b.get("notes", &ids[2]).unwrap().unwrap().deleted);
    assert_eq!(b.list("notes").unwrap().len(), 7);
    assert_converged(&a, &b, &api, "notes").await;
    assert_eq!(a.status().pending, 0);
    assert!(a.status().last_success_ms.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_reopened_from_disk_resumes_its_outbox() {
    let srv = server();
    let token = srv.token("acme", "bob").unwrap();
    let dir = tempfile::tempdir().unwrap();
    {
        let a = device(dir.path(), "a", &srv.url(), &token);
        for i in 0..120 {
            a.put("tasks", &format!("t{i:03}"), obj(json!({"done": false, "i": i}))).unwrap();
        }
    }
    // The app was killed before any sync; the next start pushes everything in batches of 50.
    let a = device(dir.path(), "a", &srv.url(), &token);
    assert_eq!(a.status().pending, 120);
    let report = a.sync_once().await.unwrap();
    assert_eq!(report.accepted, 120);
    assert_eq!(report.batches, 3);
    assert_eq!(a.status().pending, 0);
    let b = device(dir.path(), "b", &srv.url(), &token);
    b.sync_once().await.unwrap();
    assert_eq!(b.list("tasks").unwrap().len(), 120);
}
