//! `Engine::watch_records`: one change per record per committed transaction, over a real server.

use std::collections::HashMap;

use converge_core::{RecordChange, RecordState};
use converge_test_support::obj;
use serde_json::json;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::TryRecvError;

use crate::{device, server};

/// Every change waiting in `rx`, counted per record id.
fn drain(rx: &mut Receiver<RecordChange>) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    loop {
        match rx.try_recv() {
            Ok(c) => *seen.entry(c.record_id).or_default() += 1,
            Err(TryRecvError::Empty) => return seen,
            Err(e) => panic!("record changes: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_write_pull_and_acknowledgement_is_one_change_and_a_failed_write_none() {
    let srv = server();
    let token = srv.token("acme", "alice").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let a = device(dir.path(), "a", &srv.url(), &token);
    let b = device(dir.path(), "b", &srv.grpc_url(), &token);
    let mut on_a = a.watch_records();
    let mut on_b = b.watch_records();

    let r1 = a.create("notes", obj(json!({"title": "one"}))).unwrap().record_id;
    let r2 = a.create("notes", obj(json!({"title": "two"}))).unwrap().record_id;
    a.patch("notes", &r1, obj(json!({"title": "one!"}))).unwrap();
    assert_eq!(drain(&mut on_a), HashMap::from([(r1.clone(), 2), (r2.clone(), 1)]), "local writes");
    assert!(a.patch("notes", "no-such-record", obj(json!({"title": "x"}))).is_err());
    assert!(drain(&mut on_a).is_empty(), "a refused write changes nothing");

    // The push acknowledges both records (pending -> synced): one change each; their own echo
    // in the pull that follows is no change.
    a.sync_once().await.unwrap();
    assert_eq!(drain(&mut on_a), HashMap::from([(r1.clone(), 1), (r2.clone(), 1)]), "acknowledgements");
    assert_eq!(a.get("notes", &r1).unwrap().unwrap().state, RecordState::Synced);
    a.sync_once().await.unwrap();
    assert!(drain(&mut on_a).is_empty(), "a cycle with nothing new changes nothing");

    // Device B pulls them over the other wire: one change per record.
    b.sync_once().await.unwrap();
    assert_eq!(drain(&mut on_b), HashMap::from([(r1.clone(), 1), (r2, 1)]), "pulled changes");
    b.delete("notes", &r1).unwrap();
    b.sync_once().await.unwrap();
    assert_eq!(drain(&mut on_b), HashMap::from([(r1.clone(), 2)]), "the delete, then its acknowledgement");
    a.sync_once().await.unwrap();
    assert_eq!(drain(&mut on_a), HashMap::from([(r1, 1)]), "the delete pulled");

    // A receiver dropped early costs nothing; a new one sees only what follows.
    drop(on_a);
    a.create("notes", obj(json!({"title": "three"}))).unwrap();
    let mut late = a.watch_records();
    assert!(drain(&mut late).is_empty());
}
