//! `converge client --key-file` / CONVERGE_DB_KEY: an encrypted device store synced through a
//! real server holds no readable field value in any of its files; wrong and missing keys are
//! clear errors that leave the file alone; `rekey` keeps pending changes.

use std::path::Path;
use std::process::Command;

use crate::{bin, server};

const MARKER: &str = "Okapi-Lantern-5521";

/// Runs `converge client` on `db` and returns (success, stdout, stderr).
fn client(db: &Path, url: &str, token: &str, env_key: Option<&str>, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(["client", "--db"]).arg(db).args(["--server", url, "--token", token, "--json"]).args(args);
    cmd.env("CONVERGE_LOG", "warn").env_remove("CONVERGE_DB_KEY");
    if let Some(k) = env_key {
        cmd.env("CONVERGE_DB_KEY", k);
    }
    let out = cmd.output().unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn store_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("phone.db"))
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

#[test]
fn an_encrypted_device_syncs_and_keeps_nothing_readable_on_disk() {
    let srv = server();
    let token = srv.token("acme", "dora").unwrap();
    let url = srv.url();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("phone.db");
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "a long passphrase\n").unwrap();
    let kf = key_file.to_str().unwrap();

    for i in 0..20 {
        let fields = format!(r#"{{"title": "{MARKER} {i}"}}"#);
        let (ok, _, err) =
            client(&db, &url, &token, None, &["--key-file", kf, "put", "notes", &format!("n{i}"), &fields]);
        assert!(ok, "{err}");
    }
    let (ok, out, err) = client(&db, &url, &token, None, &["--key-file", kf, "sync"]);
    assert!(ok, "{err}");
    assert_eq!(json(&out)["report"]["accepted"], 20, "{out}");
    // Another device pulls them into the same encrypted form, keyed from the environment.
    let (ok, _, err) = client(&dir.path().join("phone.db2"), &url, &token, Some("a long passphrase"), &["sync"]);
    assert!(ok, "{err}");
    let files = store_files(dir.path());
    assert!(files.len() >= 2, "{:?}", files.iter().map(|f| &f.0).collect::<Vec<_>>());
    for (name, bytes) in &files {
        assert!(!bytes.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()), "{name} holds a field value in clear");
    }
    // The server's copy is plain: the check could fail.
    let server_db = std::fs::read(srv.db_path()).unwrap_or_default();
    let server_wal = std::fs::read(format!("{}-wal", srv.db_path().display())).unwrap_or_default();
    assert!([server_db, server_wal].iter().any(|b| b.windows(MARKER.len()).any(|w| w == MARKER.as_bytes())));

    // Wrong and missing keys: clear errors, the file untouched.
    let before = std::fs::read(&db).unwrap();
    let (ok, _, err) = client(&db, &url, &token, Some("not the key"), &["list", "notes"]);
    assert!(!ok && err.contains("the key does not open this store"), "{err}");
    let (ok, _, err) = client(&db, &url, &token, None, &["list", "notes"]);
    assert!(!ok && err.contains("the store is encrypted: open it with its key"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), before);
    assert!(!store_files(dir.path()).iter().any(|(n, _)| n.contains("corrupt")));

    // Re-keyed with a change pending: the change is kept and syncs under the new key.
    let (ok, _, err) = client(&db, &url, &token, None, &["--key-file", kf, "put", "notes", "late", r#"{"t": 1}"#]);
    assert!(ok, "{err}");
    let new_key = dir.path().join("new-key");
    std::fs::write(&new_key, format!("{}\n", "ab".repeat(32))).unwrap();
    let nk = new_key.to_str().unwrap();
    let (ok, _, err) = client(&db, &url, &token, None, &["--key-file", kf, "rekey", "--new-key-file", nk]);
    assert!(ok, "{err}");
    let (ok, _, _) = client(&db, &url, &token, None, &["--key-file", kf, "status"]);
    assert!(!ok, "the old key no longer opens it");
    let (ok, out, err) = client(&db, &url, &token, None, &["--key-file", nk, "status"]);
    assert!(ok, "{err}");
    assert_eq!(json(&out)["pending"], 1, "{out}");
    let (ok, out, err) = client(&db, &url, &token, None, &["--key-file", nk, "sync"]);
    assert!(ok, "{err}{out}");
    assert_eq!(json(&out)["report"]["accepted"], 1, "{out}");
}
