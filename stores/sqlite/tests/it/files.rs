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
    assert!(matches!(err, Error::TooNew { found: 99, known: 3 }), "{err:?}");
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
