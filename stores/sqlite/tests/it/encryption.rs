//! Encryption at rest (SQLCipher): no record readable in any file, wrong and missing keys are
//! clear errors that leave the file alone, re-keying keeps everything.

use std::path::Path;

use converge_core::{Engine, RecordState};
use converge_sqlite::{Error, Key, Options, SqliteStore};
use serde_json::json;

use crate::obj;

const MARKER: &str = "Zebra-Quartz-7731";

fn key(text: &str) -> Key {
    Key::parse(text).unwrap()
}

fn open(path: &Path, k: Option<&Key>) -> converge_sqlite::Result<SqliteStore> {
    SqliteStore::open_with(path, Options { key: k.cloned(), ..Options::default() })
}

fn engine(path: &Path, k: &Key) -> Engine {
    Engine::builder(Box::new(open(path, Some(k)).unwrap())).build().unwrap()
}

/// Every file of the store (database, WAL, shared memory, journals) and its bytes.
fn files_of(path: &Path) -> Vec<(String, Vec<u8>)> {
    let dir = path.parent().unwrap();
    let name = path.file_name().unwrap().to_str().unwrap();
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(name))
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_field_value_appears_in_any_file_of_an_encrypted_store() {
    const { assert!(converge_sqlite::ENCRYPTION, "the tests run with the `encryption` feature") };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let k = key("correct horse battery staple");
    let e = engine(&path, &k);
    for i in 0..300 {
        e.put("notes", &format!("r{i}"), obj(json!({"title": format!("{MARKER} {i}"), "body": MARKER.repeat(20)})))
            .unwrap();
    }
    // While open (WAL and shm in use) and after closing.
    let open_files = files_of(&path);
    assert!(open_files.iter().any(|(n, _)| n.ends_with("-wal")), "the WAL is there to check");
    drop(e);
    for (name, bytes) in open_files.into_iter().chain(files_of(&path)) {
        assert!(!contains(&bytes, MARKER.as_bytes()), "{name} holds a field value in clear");
        assert!(!contains(&bytes, b"notes"), "{name} holds an entity name in clear");
    }

    // The same writes in a plain store do show: the check above could fail.
    let plain = dir.path().join("plain.db");
    let p = crate::engine(&plain);
    p.put("notes", "r", obj(json!({"title": MARKER}))).unwrap();
    drop(p);
    assert!(files_of(&plain).iter().any(|(_, b)| contains(b, MARKER.as_bytes())));

    let e = engine(&path, &k);
    assert_eq!(e.list("notes").unwrap().len(), 300);
}

#[test]
fn a_wrong_or_missing_key_is_a_clear_error_and_the_file_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let k = key("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff");
    engine(&path, &k).put("notes", "a", obj(json!({"t": 1}))).unwrap();
    let before = std::fs::read(&path).unwrap();

    let wrong = open(&path, Some(&key("not the key"))).unwrap_err();
    assert!(matches!(wrong, Error::WrongKey), "{wrong:?}");
    assert!(wrong.to_string().contains("left as it is"), "{wrong}");
    let missing = open(&path, None).unwrap_err();
    assert!(matches!(missing, Error::KeyRequired), "{missing:?}");
    assert!(missing.to_string().contains("open it with its key"), "{missing}");

    assert_eq!(std::fs::read(&path).unwrap(), before, "the file is untouched");
    let siblings: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!siblings.iter().any(|n| n.to_string_lossy().contains("corrupt")), "nothing moved aside: {siblings:?}");
    // A plain store opened with a key is refused the same way, and stays plain and whole.
    let plain = dir.path().join("plain.db");
    crate::engine(&plain).put("notes", "a", obj(json!({"t": 1}))).unwrap();
    assert!(matches!(open(&plain, Some(&k)), Err(Error::WrongKey)));
    assert_eq!(crate::engine(&plain).list("notes").unwrap().len(), 1);
    // And the right key still opens it.
    assert_eq!(engine(&path, &k).get("notes", "a").unwrap().unwrap().fields, obj(json!({"t": 1})));
}

#[test]
fn rekeying_keeps_records_and_pending_ops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    let (old, new) = (key("old passphrase"), key("new passphrase"));
    let e = engine(&path, &old);
    for i in 0..50 {
        e.put("notes", &format!("r{i}"), obj(json!({"i": i}))).unwrap();
    }
    let device = e.device_id().to_owned();
    drop(e);

    SqliteStore::rekey(&path, Some(&old), Some(&new)).unwrap();
    assert!(matches!(open(&path, Some(&old)), Err(Error::WrongKey)), "the old key no longer opens it");
    let e = engine(&path, &new);
    assert_eq!(e.device_id(), device);
    assert_eq!(e.status().pending, 50, "pending ops are kept");
    assert!(e.list("notes").unwrap().iter().all(|r| r.state == RecordState::Pending));
    e.put("notes", "after", obj(json!({"ok": true}))).unwrap();
    drop(e);

    // A plain store can be encrypted, and an encrypted one decrypted, the same way.
    SqliteStore::rekey(&path, Some(&new), None).unwrap();
    assert_eq!(crate::engine(&path).status().pending, 51);
    SqliteStore::rekey(&path, None, Some(&old)).unwrap();
    assert_eq!(engine(&path, &old).list("notes").unwrap().len(), 51);
    assert!(matches!(SqliteStore::rekey(&path, Some(&new), None), Err(Error::WrongKey)));
    assert_eq!(engine(&path, &old).status().pending, 51, "a refused re-key changes nothing");
}
