//! The device store opened on a damaged file: it opens and reads, or refuses with an error.
#![no_main]

use converge_core::StoreRead;
use converge_sqlite::SqliteStore;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("device.db");
    std::fs::write(&path, data).unwrap();
    let Ok(store) = SqliteStore::open(&path) else { return };
    let _ = store.device_state();
    let _ = store.summary();
    let _ = store.next_ops(10, &["notes".to_owned()]);
    let _ = store.list("notes");
    let _ = store.conflicts(true);
});
