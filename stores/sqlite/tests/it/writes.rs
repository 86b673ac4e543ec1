//! Local writes: one transaction each, coalesced outbox, views, reopen.

use converge_core::store::{LocalStore, OpState, StoreRead};
use converge_core::{Error, Op, RecordState};
use converge_sqlite::SqliteStore;
use serde_json::json;

use crate::{engine, obj};

#[test]
fn put_patch_delete_update_view_and_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let e = engine(&path);
    let rec = e.create("notes", obj(json!({"title": "a", "body": "b"}))).unwrap();
    assert_eq!(rec.state, RecordState::Pending);
    assert_eq!(rec.version, 0);
    let id = rec.record_id.clone();
    let v = e.patch("notes", &id, obj(json!({"title": "a2", "body": null}))).unwrap();
    assert_eq!(serde_json::Value::Object(v.fields), json!({"title": "a2"}));
    // An unsent create and a patch fold into one create.
    assert_eq!(e.status().pending, 1);
    let other = e.put("notes", "n2", obj(json!({"x": 1}))).unwrap();
    assert_eq!(other.record_id, "n2");
    assert_eq!(e.list("notes").unwrap().len(), 2);
    assert_eq!(e.status().pending, 2);
    // Create then delete before any sync: nothing left to send, the record is gone.
    e.delete("notes", "n2").unwrap();
    assert_eq!(e.status().pending, 1);
    assert!(e.get("notes", "n2").unwrap().is_none());
    assert!(matches!(e.patch("notes", "n2", obj(json!({"x": 2}))), Err(Error::NotFound { .. })));
    drop(e);

    let store = SqliteStore::open(&path).unwrap();
    let ops = store.record_ops("notes", &id).unwrap();
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].op, Op::Create);
    assert_eq!(ops[0].state, OpState::Pending);
    assert_eq!(serde_json::Value::Object(ops[0].patch.clone()), json!({"title": "a2"}));
    store.integrity_check().unwrap();
}

#[test]
fn writes_are_validated_and_noops_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(&dir.path().join("d.db"));
    assert!(matches!(e.put("bad/entity", "x", obj(json!({}))), Err(Error::InvalidInput(_))));
    assert!(matches!(e.put("notes", "", obj(json!({}))), Err(Error::InvalidInput(_))));
    assert!(matches!(e.put("notes", "x", obj(json!({"": 1}))), Err(Error::InvalidInput(_))));
    let big = "x".repeat(300 * 1024);
    assert!(matches!(e.put("notes", "x", obj(json!({"b": big}))), Err(Error::InvalidInput(_))));
    assert!(e.get("notes", "x").unwrap().is_none());
    e.put("notes", "x", obj(json!({"a": 1}))).unwrap();
    e.patch("notes", "x", obj(json!({"a": 1}))).unwrap();
    assert_eq!(e.status().pending, 1);
    e.delete("notes", "x").unwrap();
    assert!(matches!(e.delete("notes", "x"), Err(Error::NotFound { .. })));
}

#[test]
fn hlc_and_device_id_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.db");
    let e = engine(&path);
    let device = e.device_id().to_owned();
    e.put("notes", "a", obj(json!({"v": 1}))).unwrap();
    drop(e);
    let store = SqliteStore::open(&path).unwrap();
    let first = store.max_outbox_hlc().unwrap().unwrap();
    drop(store);
    let e = engine(&path);
    assert_eq!(e.device_id(), device);
    e.put("notes", "b", obj(json!({"v": 2}))).unwrap();
    drop(e);
    let mut store = SqliteStore::open(&path).unwrap();
    let ops = store.record_ops("notes", "b").unwrap();
    assert!(ops[0].hlc > first, "{} must be after {}", ops[0].hlc, first);
    assert_eq!(ops[0].hlc.device, device);
    store.checkpoint().unwrap();
}

#[test]
fn a_failed_transaction_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.db");
    let mut store = SqliteStore::open(&path).unwrap();
    let before = store.summary().unwrap();
    let r = store.transact(&mut |tx| {
        let mut rec = converge_core::store::LocalRecord {
            entity: "notes".into(),
            record_id: "r".into(),
            server_version: 0,
            server_fields: Default::default(),
            server_deleted: false,
            fields: Default::default(),
            deleted: false,
            pending: 1,
            conflicts: 0,
            failed: 0,
        };
        tx.put_record(&rec)?;
        rec.pending = 2;
        Err(Error::fatal("stop half way"))
    });
    assert!(r.is_err());
    assert!(store.record("notes", "r").unwrap().is_none());
    assert_eq!(store.summary().unwrap(), before);
}
