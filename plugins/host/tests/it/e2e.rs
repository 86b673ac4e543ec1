//! End to end: two devices (SQLite stores on disk) edit one item governed by the inventory
//! plugin, sync through the real `SyncService` on a SQLite file, and converge on the plugin's
//! merge whichever reaches the server first; the journal names the plugin.

use std::sync::Arc;

use converge_core::wire::Limits;
use converge_core::{CheckMode, Engine, MergePolicy, RecordState, Scope, SyncApi, Tenancy};
use converge_server::{SqliteServerStore, SyncService};
use converge_sqlite::SqliteStore;
use serde_json::{Value, json};

use crate::support::{engine, load};

fn obj(v: Value) -> converge_core::Fields {
    v.as_object().unwrap().clone()
}

async fn converge(a_first: bool) {
    let dir = tempfile::tempdir().unwrap();
    let server = SqliteServerStore::open(&dir.path().join("server.db")).unwrap();
    let service = SyncService::new(Arc::new(server), Limits::default());
    let api: Arc<dyn SyncApi> = service.scoped(Scope::new("acme", "u"));
    let plugins = engine();
    // Record mode: equal deltas on both sides must still conflict (see the plugin's docs).
    let inventory = load(plugins, "inventory");
    assert_eq!(inventory.check_mode(), CheckMode::Record, "the plugin asks for record checks itself");
    let inventory: Arc<dyn MergePolicy> = Arc::new(inventory);
    let device = |name: &str| {
        let store = SqliteStore::open(dir.path().join(format!("{name}.db"))).unwrap();
        Engine::builder(Box::new(store)).api(api.clone()).policy("items", inventory.clone()).build().unwrap()
    };
    let (a, b) = (device("a"), device("b"));

    a.put("items", "bolt", obj(json!({"name": "bolt", "qty": 10}))).unwrap();
    a.sync_once().await.unwrap();
    b.sync_once().await.unwrap();
    a.patch("items", "bolt", obj(json!({"qty": 13}))).unwrap();
    b.patch("items", "bolt", obj(json!({"qty": 15}))).unwrap();
    let (first, second) = if a_first { (&a, &b) } else { (&b, &a) };
    first.sync_once().await.unwrap();
    let report = second.sync_once().await.unwrap();
    assert_eq!(report.conflicts, 1, "the second device's edit conflicts");
    // The merge is a new op; send it, then let the first device pull it.
    for _ in 0..2 {
        second.sync_once().await.unwrap();
        first.sync_once().await.unwrap();
    }

    let expected = obj(json!({"name": "bolt", "qty": 18}));
    assert_eq!(api.record("items", "bolt").await.unwrap().fields, expected, "the server has the plugin's merge");
    for (device, name) in [(&a, "a"), (&b, "b")] {
        let view = device.get("items", "bolt").unwrap().unwrap();
        assert_eq!(view.fields, expected, "device {name} converged");
        assert_eq!(view.state, RecordState::Synced, "device {name}");
        assert_eq!(device.status().open_conflicts, 0);
    }
    let journal = second.journal().unwrap();
    assert_eq!(journal.len(), 1);
    let row = &journal[0];
    assert_eq!((row.policy.as_str(), row.outcome.as_str()), ("inventory", "merged"));
    assert_eq!(row.reason, "counts merged: qty");
    assert!(first.journal().unwrap().is_empty(), "the first device never saw a conflict");
}

#[tokio::test]
async fn two_devices_converge_on_the_plugin_merge_when_a_syncs_first() {
    converge(true).await;
}

#[tokio::test]
async fn two_devices_converge_on_the_plugin_merge_when_b_syncs_first() {
    converge(false).await;
}

#[tokio::test]
async fn a_plugin_that_loops_leaves_the_conflict_open_naming_itself_and_sync_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let server = SqliteServerStore::open(&dir.path().join("server.db")).unwrap();
    let service = SyncService::new(Arc::new(server), Limits::default());
    let api: Arc<dyn SyncApi> = service.scoped(Scope::new("acme", "u"));
    let looping: Arc<dyn MergePolicy> = Arc::new(load(engine(), "fixture_loop"));
    let device = |name: &str| {
        let store = SqliteStore::open(dir.path().join(format!("{name}.db"))).unwrap();
        Engine::builder(Box::new(store)).api(api.clone()).policy("items", looping.clone()).build().unwrap()
    };
    let (a, b) = (device("a"), device("b"));
    a.put("items", "bolt", obj(json!({"qty": 10}))).unwrap();
    a.sync_once().await.unwrap();
    b.sync_once().await.unwrap();
    a.patch("items", "bolt", obj(json!({"qty": 13}))).unwrap();
    b.patch("items", "bolt", obj(json!({"qty": 15}))).unwrap();
    b.put("items", "nut", obj(json!({"qty": 1}))).unwrap();
    a.sync_once().await.unwrap();
    let report = b.sync_once().await.unwrap();
    assert_eq!((report.conflicts, report.accepted), (1, 1), "the other record synced");
    let open = b.conflicts().unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].policy, "loop");
    assert!(open[0].reason.contains("plugin loop") && open[0].reason.contains("ran out of fuel"), "{}", open[0].reason);
    assert_eq!(open[0].local["qty"], json!(15), "the local value is kept for the user");
    assert_eq!(b.get("items", "bolt").unwrap().unwrap().state, RecordState::Conflict);
    assert_eq!(api.record("items", "nut").await.unwrap().fields["qty"], json!(1));
}
