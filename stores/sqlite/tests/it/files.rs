//! The store file: corrupt files moved aside, newer schemas refused, many writes stay sound.

use converge_core::Engine;
use converge_sqlite::{Error, SqliteStore};
use serde_json::json;

use crate::{engine, obj};

#[test]
fn a_corrupt_file_is_moved_aside_and_reported_never_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    std::fs::write(&path, b"this is not a sqlite database, but somebody's data".repeat(100)).unwrap();
    let err = SqliteStore::open(&path).unwrap_err();
    let Error::Corrupt { moved_to, .. } = err else { panic!("expected Corrupt, got {err:?}") };
    assert!(!path.exists(), "the damaged file must not stay in place");
    let kept = std::fs::read(&moved_to).unwrap();
    assert!(kept.starts_with(b"this is not a sqlite database"), "the damaged bytes are kept");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(err, Error::TooNew { found: 99, known: 5 }), "{err:?}");
}

#[test]
fn many_writes_keep_the_file_sound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let e = engine(&path);
    for i in 0..2000 {
        e.put("notes", &format!("r{i}"), obj(json!({"i": i, "text": "hello"}))).unwrap();
    }
    assert_eq!(e.status().pending, 2000);
    drop(e);
    let store = SqliteStore::open(&path).unwrap();
    store.integrity_check().unwrap();
    let wal = std::fs::metadata(dir.path().join("device.db-wal")).map(|m| m.len()).unwrap_or(0);
    assert!(wal < 64 << 20, "the background checkpointer keeps the WAL bounded ({wal} bytes)");
}

#[test]
fn a_version_1_file_migrates_its_refused_ops_to_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let e = engine(&path);
    e.put("notes", "a", obj(json!({"t": 1}))).unwrap();
    drop(e);
    // Turn the file back into version 1: the v1 state name, no held index, no metrics column, no
    // re-sync table.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DROP TABLE resync_unseen; DROP INDEX outbox_held; ALTER TABLE sync_state DROP COLUMN metrics; \
         ALTER TABLE conflicts DROP COLUMN local_hlc; ALTER TABLE conflicts DROP COLUMN server_meta; DROP TABLE settings; \
         UPDATE outbox SET state = 'failed'; UPDATE records SET failed = 1; PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(conn);
    let e = engine(&path);
    let held = e.held_ops().unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].state, converge_core::store::OpState::DeadLetter);
    assert_eq!((e.status().pending, e.status().dead_letters), (0, 1));
    assert_eq!(e.metrics().cycles, 0);
}

#[test]
fn a_version_3_file_keeps_confirmed_fields_once_where_they_equal_the_view() {
    use converge_core::store::{LocalStore, StoreRead};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    drop(SqliteStore::open(&path).unwrap());
    // Turn the file back into version 3 (confirmed fields NOT NULL, stored in full) with a
    // synced record (confirmed = view) and one with a pending edit (confirmed != view).
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        r#"DROP TABLE records;
        ALTER TABLE conflicts DROP COLUMN local_hlc; ALTER TABLE conflicts DROP COLUMN server_meta; DROP TABLE settings;
        CREATE TABLE records (entity TEXT NOT NULL, record_id TEXT NOT NULL, server_version INTEGER NOT NULL,
            server_fields TEXT NOT NULL, server_deleted INTEGER NOT NULL, fields TEXT NOT NULL,
            deleted INTEGER NOT NULL, pending INTEGER NOT NULL, conflicts INTEGER NOT NULL,
            failed INTEGER NOT NULL, PRIMARY KEY (entity, record_id)) WITHOUT ROWID;
        INSERT INTO records VALUES ('notes', 'synced', 3, '{"t":"a"}', 0, '{"t":"a"}', 0, 0, 0, 0);
        INSERT INTO records VALUES ('notes', 'edited', 2, '{"t":"old"}', 0, '{"t":"new"}', 0, 1, 0, 0);
        PRAGMA user_version = 3;"#,
    )
    .unwrap();
    drop(conn);
    let store = SqliteStore::open(&path).unwrap();
    let synced = store.record("notes", "synced").unwrap().unwrap();
    assert_eq!(
        (synced.server_version, &synced.server_fields, &synced.fields),
        (3, &obj(json!({"t": "a"})), &obj(json!({"t": "a"})))
    );
    let edited = store.record("notes", "edited").unwrap().unwrap();
    assert_eq!(edited.server_fields, obj(json!({"t": "old"})));
    assert_eq!(edited.fields, obj(json!({"t": "new"})));
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let stored: Vec<Option<String>> = conn
        .prepare("SELECT server_fields FROM records ORDER BY record_id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(stored, [Some(r#"{"t":"old"}"#.to_owned()), None], "the synced record's copy is gone");
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, 5, "migrated to the latest version");
    // A new edit of the synced record keeps its confirmed fields apart again.
    drop(conn);
    let mut store = SqliteStore::open(&path).unwrap();
    store
        .transact(&mut |tx| {
            let mut rec = tx.record("notes", "synced")?.expect("the record");
            rec.fields = obj(json!({"t": "b"}));
            rec.pending = 1;
            tx.put_record(&rec)
        })
        .unwrap();
    let synced = store.record("notes", "synced").unwrap().unwrap();
    assert_eq!((synced.server_fields, synced.fields), (obj(json!({"t": "a"})), obj(json!({"t": "b"}))));
}

#[test]
fn a_full_disk_gives_a_typed_error_and_leaves_the_store_intact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let options = converge_sqlite::Options { max_bytes: Some(256 << 10), ..Default::default() };
    let e = Engine::builder(Box::new(SqliteStore::open_with(&path, options).unwrap())).build().unwrap();
    let body = "x".repeat(2000);
    let mut written = 0;
    let err = loop {
        match e.put("notes", &format!("r{written:04}"), obj(json!({"body": body, "i": written}))) {
            Ok(_) => written += 1,
            Err(err) => break err,
        }
        assert!(written < 10_000, "the quota never bit");
    };
    assert!(matches!(err, converge_core::Error::StoreFull(_)), "{err:?}");
    assert_eq!(err.class(), converge_core::ErrorClass::Retryable);
    assert!(written > 10, "{written}");
    // The failed write left nothing behind; everything before it is whole.
    assert!(e.get("notes", &format!("r{written:04}")).unwrap().is_none());
    assert_eq!(e.list("notes").unwrap().len(), written);
    assert_eq!(e.status().pending, written as u64);
    // Reads still work.
    assert_eq!(e.get("notes", "r0000").unwrap().unwrap().fields["i"], json!(0));
    drop(e);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    let ops: i64 = conn.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0)).unwrap();
    assert_eq!(ops, written as i64, "one outbox op per record, none for the failed write");
    drop(conn);
    // With room again, the same write goes through.
    let e = engine(&path);
    e.put("notes", &format!("r{written:04}"), obj(json!({"body": body, "i": written}))).unwrap();
    assert_eq!(e.list("notes").unwrap().len(), written + 1);
}

#[test]
fn the_write_ahead_log_stays_bounded_under_steady_writes_and_is_truncated_in_a_pause() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let wal = converge_sqlite::WalOptions {
        max_bytes: 1 << 20,
        checkpoint_every_commits: 20,
        truncate_after_idle: std::time::Duration::from_millis(300),
    };
    let options = converge_sqlite::Options { wal, ..Default::default() };
    let e = Engine::builder(Box::new(SqliteStore::open_with(&path, options).unwrap())).build().unwrap();
    let wal_file = dir.path().join("device.db-wal");
    let size = || std::fs::metadata(&wal_file).map(|m| m.len()).unwrap_or(0);
    let (mut largest, mut generations) = (0, std::collections::BTreeSet::new());
    let body = "y".repeat(1000);
    for i in 0..6000 {
        e.put("notes", &format!("r{i:05}"), obj(json!({"body": body, "i": i}))).unwrap();
        if i % 50 == 0 {
            largest = largest.max(size());
            generations.extend(converge_sqlite_support::log_salt(&wal_file));
        }
    }
    // About 70 MiB of log was written (6000 records of 1 KB, each also in the outbox: three
    // pages a commit). The log started over in place again and again instead of growing; how
    // far past its 1 MiB bound it got depends on how fast the checkpointer thread ran beside
    // the writer (on a loaded machine, a pass can take long while the writer goes on).
    assert!(generations.len() >= 4, "the log started over {} times", generations.len().saturating_sub(1));
    assert!(largest > 0 && largest <= 24 << 20, "the log grew to {largest} bytes");
    // Once the writes pause, the checkpointer gives the log's space back.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while size() > 0 {
        assert!(std::time::Instant::now() < deadline, "the log stayed at {} bytes (largest {largest})", size());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(e.list("notes").unwrap().len(), 6000);
    drop(e);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    drop(conn);
    assert_eq!(crate::engine(&path).list("notes").unwrap().len(), 6000);
}

#[test]
fn settings_are_kept_beside_the_data_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let mut store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.setting("policies").unwrap(), None);
    store.set_setting("policies", Some(r#"{"notes":"field_merge"}"#)).unwrap();
    store.set_setting("policies", Some(r#"{"notes":"lww"}"#)).unwrap();
    drop(store);
    let mut store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.setting("policies").unwrap().as_deref(), Some(r#"{"notes":"lww"}"#));
    store.set_setting("policies", None).unwrap();
    assert_eq!(store.setting("policies").unwrap(), None);
}
