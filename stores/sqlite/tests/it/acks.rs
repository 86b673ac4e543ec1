//! The acknowledgement fast path: a record's only op, accepted, makes its view the confirmed
//! state without the record's fields being read or written; every other case changes nothing.

use converge_core::store::{LocalRecord, LocalStore, OpState, OutboxOp, StoreRead};
use converge_core::{CheckMode, Fields, Hlc, Op};
use converge_sqlite::SqliteStore;
use serde_json::json;

use crate::obj;

fn record(id: &str, fields: Fields, pending: u32) -> LocalRecord {
    LocalRecord {
        entity: "notes".into(),
        record_id: id.into(),
        server_version: 0,
        server_fields: Fields::new(),
        server_deleted: false,
        fields,
        deleted: false,
        pending,
        conflicts: 0,
        failed: 0,
    }
}

fn op(id: &str, kind: Op, patch: Fields, base_version: u64) -> OutboxOp {
    OutboxOp {
        seq: 0,
        op_id: uuid::Uuid::now_v7(),
        entity: "notes".into(),
        record_id: id.into(),
        op: kind,
        patch,
        base_version,
        hlc: Hlc { millis: 1_764_064_800_000, counter: 0, device: "dev-a".into() },
        check: CheckMode::Fields,
        state: OpState::InFlight,
        batch_id: Some("k1".into()),
        attempts: 0,
        last_error: None,
        created_ms: 0,
    }
}

/// Writes `rec` and `ops` in one transaction; returns the ops' seqs.
fn seed(store: &mut SqliteStore, rec: &LocalRecord, ops: &[OutboxOp]) -> Vec<i64> {
    let mut seqs = Vec::new();
    store
        .transact(&mut |tx| {
            seqs.clear();
            tx.put_record(rec)?;
            for o in ops {
                seqs.push(tx.insert_op(o)?);
            }
            Ok(())
        })
        .unwrap();
    seqs
}

fn confirm(store: &mut SqliteStore, id: &str, seq: i64, version: u64) -> converge_core::Result<bool> {
    let mut done = false;
    store.transact(&mut |tx| {
        done = tx.confirm_sole_op("notes", id, seq, version)?;
        Ok(())
    })?;
    Ok(done)
}

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("device.db")).unwrap();
    (dir, store)
}

#[test]
fn the_only_op_accepted_makes_the_view_the_confirmed_state() {
    let (_dir, mut store) = open();
    let fields = obj(json!({"title": "a", "n": 1}));
    let seqs = seed(&mut store, &record("r1", fields.clone(), 1), &[op("r1", Op::Create, fields.clone(), 0)]);
    assert!(confirm(&mut store, "r1", seqs[0], 1).unwrap());
    let rec = store.record("notes", "r1").unwrap().unwrap();
    assert_eq!((rec.server_version, rec.pending, rec.server_deleted), (1, 0, false));
    assert_eq!((rec.server_fields, rec.fields), (fields.clone(), fields));
    assert!(store.record_ops("notes", "r1").unwrap().is_empty());

    // A delete: the confirmed state becomes the tombstone the view already shows.
    let mut deleted = record("r2", Fields::new(), 1);
    deleted.deleted = true;
    (deleted.server_version, deleted.server_fields) = (4, obj(json!({"title": "b"})));
    let seqs = seed(&mut store, &deleted, &[op("r2", Op::Delete, Fields::new(), 4)]);
    assert!(confirm(&mut store, "r2", seqs[0], 5).unwrap());
    let rec = store.record("notes", "r2").unwrap().unwrap();
    assert_eq!((rec.server_version, rec.server_deleted, rec.server_fields), (5, true, Fields::new()));
}

#[test]
fn any_other_record_takes_the_general_path_and_nothing_changes() {
    let (_dir, mut store) = open();
    let fields = obj(json!({"title": "a"}));
    // Two ops: the view holds the second one too.
    let two = record("two", obj(json!({"title": "b"})), 2);
    let seqs = seed(
        &mut store,
        &two,
        &[op("two", Op::Create, fields.clone(), 0), op("two", Op::Update, obj(json!({"title": "b"})), 0)],
    );
    assert!(!confirm(&mut store, "two", seqs[0], 1).unwrap());
    // An open conflict, a held op, or a confirmed version already at the answer's.
    let mut conflicted = record("conflicted", fields.clone(), 1);
    conflicted.conflicts = 1;
    let mut held = record("held", fields.clone(), 1);
    held.failed = 1;
    let mut newer = record("newer", fields.clone(), 1);
    newer.server_version = 7;
    let mut cases = vec![(two, seqs[0], 1)];
    for rec in [conflicted, held, newer] {
        let seq = seed(&mut store, &rec, &[op(&rec.record_id, Op::Update, fields.clone(), 0)])[0];
        assert!(!confirm(&mut store, &rec.record_id, seq, 7).unwrap(), "{}", rec.record_id);
        cases.push((rec, seq, 7));
    }
    for (rec, _, _) in &cases {
        assert_eq!(store.record("notes", &rec.record_id).unwrap().as_ref(), Some(rec), "{}", rec.record_id);
        assert_eq!(store.record_ops("notes", &rec.record_id).unwrap().len(), rec.pending as usize);
    }
}

#[test]
fn an_op_that_is_not_the_records_own_is_refused_and_rolled_back() {
    let (_dir, mut store) = open();
    let fields = obj(json!({"title": "a"}));
    let a = record("a", fields.clone(), 1);
    let seq_a = seed(&mut store, &a, &[op("a", Op::Create, fields.clone(), 0)])[0];
    let b = record("b", fields.clone(), 1);
    seed(&mut store, &b, &[op("b", Op::Create, fields.clone(), 0)]);
    // Record b's counters say one op, but the seq named is a's: refused, nothing kept.
    assert!(confirm(&mut store, "b", seq_a, 1).is_err());
    assert_eq!(store.record("notes", "b").unwrap(), Some(b));
    assert_eq!(store.record("notes", "a").unwrap(), Some(a));
    assert_eq!(store.record_ops("notes", "a").unwrap().len(), 1);
}
