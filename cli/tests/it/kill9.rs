//! Kill -9 at every labelled crash point (`converge_core::crash::POINTS`): the real `converge`
//! binary (its test build has the points armed) aborts at the point, as a power cut or `kill -9`
//! would, and is started again without the crash. Then: nothing acknowledged is lost, nothing is
//! applied twice (every server version is exact and the versions add up to the server's change
//! counter), both SQLite files pass `PRAGMA integrity_check`, and the outbox resumes from the
//! last batch it persisted.
//!
//! One table-driven test covers every label, each case with its own server and devices, a few
//! at a time; a label without a scenario fails the test.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use converge_core::crash;
use converge_test_support::{ServerProcess, obj};
use serde_json::{Value, json};

use crate::{bin, server};

const TENANT: &str = "acme";
const USER: &str = "alice";
/// Records a device pushes: three batches of 50 (the engine's batch size): 50, 50, 20.
const PUSHED: usize = 120;
/// Records a device pulls: three pages of 500 (the engine's page size): 500, 500, 200.
const FED: usize = 1200;
/// Cases run at once (each is a few processes, mostly waiting on each other).
const PARALLEL: usize = 4;
const SIGABRT: i32 = 6;

#[test]
fn every_crash_point_kills_the_process_there_and_a_restart_loses_and_doubles_nothing() {
    let started = Instant::now();
    // Taken from the end: the slowest scenarios first.
    let mut queue: Vec<&'static str> = crash::POINTS.to_vec();
    queue.sort_by_key(|l| l.starts_with("pull.") || l.starts_with("server."));
    let queue = Mutex::new(queue);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| {
                loop {
                    let Some(label) = queue.lock().unwrap().pop() else { break };
                    let t = Instant::now();
                    // A thread named after the label, so a failed assertion says where it was.
                    let case = std::thread::Builder::new().name(label.to_owned()).spawn(move || scenario(label));
                    let result = case.expect("spawn a case thread").join();
                    eprintln!("kill9 {label}: {} in {:.1?}", if result.is_ok() { "ok" } else { "FAILED" }, t.elapsed());
                    if let Err(e) = result {
                        let msg = e
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                            .unwrap_or_default();
                        failures.lock().unwrap().push(format!("{label}: {msg}"));
                    }
                }
            });
        }
    });
    eprintln!("kill9: {} crash points in {:.1?}", crash::POINTS.len(), started.elapsed());
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "crash points that failed:\n{}", failures.join("\n"));
}

/// Runs the scenario that reaches `label`.
fn scenario(label: &str) {
    match label {
        "write.before_commit" | "write.after_commit" => write_point(label),
        "batch.before_commit"
        | "batch.after_commit"
        | "send.after_response"
        | "ack.before_commit"
        | "ack.after_commit" => push_point(label),
        "pull.after_fetch" | "pull.before_cursor" | "pull.after_commit" => pull_point(label),
        "resolve.before_commit" | "resolve.after_commit" => resolve_point(label),
        "server.apply.before_commit" | "server.apply.after_commit" => server_point(label),
        other => panic!("crash point {other} has no kill -9 scenario; add one to cli/tests/it/kill9.rs"),
    }
}

#[test]
fn a_crash_point_that_does_not_exist_or_a_bad_count_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");
    let run = |at: &str| {
        Command::new(bin())
            .args(["client", "--db", db.to_str().unwrap(), "status"])
            .env(crash::ENV, at)
            .output()
            .expect("run converge")
    };
    let out = run("ack.after_comit:2");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("\"ack.after_comit\""), "{err}");
    for label in crash::POINTS {
        assert!(err.contains(label), "the refusal lists {label}: {err}");
    }
    let out = run("ack.after_commit:zero");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("whole number"), "{err}");
    // A known point is accepted: `status` reaches no crash point and exits 0.
    let out = run("ack.after_commit:2");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Crash during a `put`: of a new record and of an update to a synced one.
fn write_point(label: &str) {
    let (srv, dir, token) = setup(server());
    let a = Device::new(dir.path(), "a", &srv, &token);
    a.put("n1", json!({"t": "one"}));
    a.sync();
    a.crash(label, &["put", "notes", "n2", r#"{"t": "two"}"#]);
    a.integrity_ok();
    a.crash(label, &["put", "notes", "n1", r#"{"t": "uno"}"#]);
    a.integrity_ok();
    let notes = a.notes();
    let (expected, accepted) = if label == "write.before_commit" {
        // The put never returned and its transaction never committed: no trace of either.
        assert_eq!(notes.keys().collect::<Vec<_>>(), ["n1"], "the crashed create left nothing");
        assert_eq!(notes["n1"], (1, json!({"t": "one"}), "synced".into()), "the crashed update left nothing");
        assert!(a.outbox().is_empty(), "no outbox row survived");
        (expect(&[("n1", 1, json!({"t": "one"}))]), 0)
    } else {
        // Committed before the crash: both writes are there, pending.
        assert_eq!(notes["n2"], (0, json!({"t": "two"}), "pending".into()));
        assert_eq!(notes["n1"], (1, json!({"t": "uno"}), "pending".into()));
        assert_eq!(a.outbox().len(), 2, "one outbox op per write");
        (expect(&[("n1", 2, json!({"t": "uno"})), ("n2", 1, json!({"t": "two"}))]), 2)
    };
    let doc = a.sync();
    assert_eq!(doc["report"]["accepted"], accepted, "{doc}");
    a.assert_synced(&expected);
    let tables = server_tables(&srv);
    tables.assert_consistent(&expected);
    assert_eq!(fresh_notes(&srv, dir.path(), &token), expected);
}

/// Crash in the second batch of a three-batch push (the first is acknowledged and persisted).
fn push_point(label: &str) {
    let (srv, dir, token) = setup(server());
    let a = Device::new(dir.path(), "a", &srv, &token);
    let expected = write_pushed(&a);
    a.crash(&format!("{label}:2"), &["sync"]);
    a.integrity_ok();

    // What the crash left: the device's outbox and the server's tables.
    let outbox = a.outbox();
    let in_flight: Vec<&str> = outbox.iter().filter_map(|(_, b)| b.as_deref()).collect();
    let key = in_flight.first().map(|k| (*k).to_owned());
    let at_crash = server_tables(&srv);
    // (ops left in the outbox, of them in flight, changes the server applied). A batch after the
    // first is marked in flight by the transaction that persists the acks of the one before.
    let (left, flying, applied) = match label {
        // The transaction persisting the first batch's acks and marking the second rolled back:
        // the first batch is in flight again (answered, the answer not persisted).
        "batch.before_commit" => (120, 50, 50),
        // The second batch is in flight on the device, never sent.
        "batch.after_commit" => (70, 50, 50),
        // The server applied the second batch; the device did not persist the answer.
        "send.after_response" | "ack.before_commit" => (70, 50, 100),
        // The second batch's answer is persisted and the third batch marked, never sent.
        "ack.after_commit" => (20, 20, 100),
        _ => unreachable!("{label}"),
    };
    // Whether the batch in flight went out (and the server stored it) before the crash.
    let sent = matches!(label, "batch.before_commit" | "send.after_response" | "ack.before_commit");
    assert_eq!(outbox.len(), left, "ops left in the outbox");
    assert_eq!(in_flight.len(), flying, "ops in flight");
    assert!(in_flight.iter().all(|b| Some(*b) == key.as_deref()), "one batch in flight");
    assert!(outbox.iter().all(|(state, b)| (state == "in_flight") == b.is_some()), "{outbox:?}");
    assert_eq!(at_crash.counter, applied, "changes applied by the server when the device died");
    assert_eq!(at_crash.pushes.len() as u64, applied / 50, "batches the server stored");
    if let Some(k) = &key {
        assert_eq!(at_crash.pushes.contains(k), sent, "the in-flight batch is stored iff it was sent");
    }

    let doc = a.sync();
    let report = &doc["report"];
    // Resumed from the last persisted batch: everything not acknowledged, nothing that was.
    assert_eq!(report["accepted"], left, "{doc}");
    assert_eq!((report["conflicts"].as_u64(), report["rejected"].as_u64()), (Some(0), Some(0)), "{doc}");
    assert_eq!(report["batches"], left.div_ceil(50), "{doc}");
    a.assert_synced(&expected);
    let tables = server_tables(&srv);
    tables.assert_consistent(&expected);
    assert_eq!(tables.op_results, PUSHED as u64, "one stored result per op");
    // Three batches in all: the in-flight one was resent under its own key, not a new one.
    assert_eq!(tables.pushes.len(), 3, "batches the server stored: {:?}", tables.pushes);
    if let Some(k) = &key {
        assert!(tables.pushes.contains(k), "the in-flight batch went out under its key {k}");
    }
    assert_eq!(fresh_notes(&srv, dir.path(), &token), expected);
}

/// Crash on the second page of a three-page pull (the first page and its cursor are persisted).
fn pull_point(label: &str) {
    let (srv, dir, token) = setup(server());
    // The feed, written by an in-process device (1200 process runs would be slow).
    let writer = crate::device(dir.path(), "writer", &srv.url(), &token);
    let mut expected = BTreeMap::new();
    for i in 0..FED {
        let id = format!("n{i:04}");
        writer.put("notes", &id, obj(json!({"i": i}))).unwrap();
        expected.insert(id, (1, json!({"i": i})));
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(writer.sync_once()).unwrap();
    drop(writer);

    let b = Device::new(dir.path(), "b", &srv, &token);
    b.crash(&format!("{label}:2"), &["sync"]);
    b.integrity_ok();
    // Pages are committed whole with their cursor: one page, or two once the second committed.
    let (kept, resumed) = match label {
        "pull.after_fetch" | "pull.before_cursor" => (500, 700),
        "pull.after_commit" => (1000, 200),
        _ => unreachable!("{label}"),
    };
    assert_eq!(b.record_rows(), kept, "records the device kept");
    assert!(b.cursor().is_some(), "the first page's cursor was saved");
    let doc = b.sync();
    assert_eq!(doc["report"]["pulled"], resumed, "the pull resumed from the saved cursor: {doc}");
    assert_eq!(doc["report"]["pages"], if resumed == 200 { 1 } else { 2 }, "{doc}");
    b.assert_synced(&expected);
    assert_eq!(b.record_rows(), FED as u64, "the cursor skipped nothing");
    server_tables(&srv).assert_consistent(&expected);
}

/// Crash while settling an open conflict with `--keep-local`.
fn resolve_point(label: &str) {
    let (srv, dir, token) = setup(server());
    let a = Device::new(dir.path(), "a", &srv, &token);
    let b = Device::new(dir.path(), "b", &srv, &token);
    a.put("r", json!({"title": "base"}));
    a.sync();
    b.sync();
    a.put("r", json!({"title": "from a"}));
    a.sync();
    b.put("r", json!({"title": "from b"}));
    let doc = b.sync();
    assert_eq!(doc["report"]["conflicts"], 1, "{doc}");
    let open = b.json(&["conflicts"]);
    let id = open[0]["id"].as_i64().expect("a conflict id").to_string();

    b.crash(label, &["resolve", &id, "--keep-local"]);
    b.integrity_ok();
    let open = b.json(&["conflicts"]);
    if label == "resolve.before_commit" {
        // Not settled: the conflict is still open, the local intent not queued. Settle it now.
        assert_eq!(open.as_array().map(Vec::len), Some(1), "{open}");
        assert!(b.outbox().is_empty());
        assert_eq!(b.notes()["r"].2, "conflict");
        b.json(&["resolve", &id, "--keep-local"]);
    } else {
        // Settled exactly once: nothing open, and settling again is refused.
        assert_eq!(open.as_array().map(Vec::len), Some(0), "{open}");
        assert_eq!(b.outbox().len(), 1, "the kept local value is queued");
        let again = b.command(&["resolve", &id, "--keep-local"]).output().unwrap();
        assert_eq!(again.status.code(), Some(1), "a settled conflict cannot be settled again");
    }
    let journal = b.json(&["journal"]);
    let outcomes: Vec<&str> = journal.as_array().unwrap().iter().filter_map(|c| c["outcome"].as_str()).collect();
    assert_eq!(outcomes, ["take_local"], "{journal}");

    let doc = b.sync();
    assert_eq!(doc["report"]["accepted"], 1, "{doc}");
    let expected = expect(&[("r", 3, json!({"title": "from b"}))]);
    b.assert_synced(&expected);
    a.sync();
    a.assert_synced(&expected);
    server_tables(&srv).assert_consistent(&expected);
    assert_eq!(fresh_notes(&srv, dir.path(), &token), expected);
}

/// The server dies applying the second batch of a push; restarted without the crash point, the
/// device's resend applies the batch once.
fn server_point(label: &str) {
    let at = format!("{label}:2");
    let srv = ServerProcess::start_with_env(bin(), &[], &[(crash::ENV, at.as_str())]).expect("start converge serve");
    let (mut srv, dir, token) = setup(srv);
    let a = Device::new(dir.path(), "a", &srv, &token);
    let expected = write_pushed(&a);
    let out = a.command(&["sync"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "the sync fails: {err}");
    assert!(err.contains("sync did not finish: offline"), "the server is gone: {err}");
    let status = srv.wait_for_exit(Duration::from_secs(20)).expect("the server died");
    assert_aborted(status, None, &at, "converge serve");

    let outbox = a.outbox();
    let key = outbox[0].1.clone().expect("the second batch is in flight");
    assert_eq!(outbox.len(), 70);
    assert_eq!(outbox.iter().filter(|(_, b)| b.as_ref() == Some(&key)).count(), 50, "{outbox:?}");
    a.integrity_ok();
    let at_crash = server_tables(&srv);
    // Before the commit nothing of the batch is kept; after it, all of it.
    let committed = label == "server.apply.after_commit";
    assert_eq!(at_crash.counter, if committed { 100 } else { 50 });
    assert_eq!(at_crash.pushes.contains(&key), committed);

    srv.restart_with_env(&[]).expect("restart converge serve");
    let doc = a.sync();
    // 70 acknowledged now (the resent batch and the third); after a commit the server applied
    // only the third batch's 20 ops: the resend was answered from the stored response.
    assert_eq!(doc["report"]["accepted"], 70, "{doc}");
    a.assert_synced(&expected);
    let tables = server_tables(&srv);
    tables.assert_consistent(&expected);
    assert_eq!(tables.op_results, PUSHED as u64);
    assert_eq!(tables.pushes.len(), 3, "{:?}", tables.pushes);
    assert!(tables.pushes.contains(&key));
    assert_eq!(fresh_notes(&srv, dir.path(), &token), expected);
}

// ---- helpers ----

/// (version, fields) per record id.
type Notes = BTreeMap<String, (u64, Value)>;

fn expect(rows: &[(&str, u64, Value)]) -> Notes {
    rows.iter().map(|(id, v, f)| ((*id).to_owned(), (*v, f.clone()))).collect()
}

fn setup(srv: ServerProcess) -> (ServerProcess, tempfile::TempDir, String) {
    let token = srv.token(TENANT, USER).expect("a token");
    (srv, tempfile::tempdir().expect("a temp dir"), token)
}

/// Writes the records of a three-batch push with `converge client put`; returns what the server
/// must hold once they are pushed (each created once: version 1).
fn write_pushed(d: &Device) -> Notes {
    (0..PUSHED)
        .map(|i| {
            let id = format!("n{i:03}");
            d.put(&id, json!({"i": i}));
            (id, (1, json!({"i": i})))
        })
        .collect()
}

/// Asserts `status` is a death by abort (a signal, not an exit), at `at` when `stderr` is known.
fn assert_aborted(status: ExitStatus, stderr: Option<&str>, at: &str, what: &str) {
    let err = stderr.unwrap_or("");
    assert!(
        !status.success() && status.code().is_none(),
        "{what} with {}={at} was to die by a signal; it exited: {status}; stderr: {err}",
        crash::ENV
    );
    assert_eq!(status.signal(), Some(SIGABRT), "{what} with {}={at}: {status}", crash::ENV);
    if let Some(err) = stderr {
        let label = at.split(':').next().unwrap_or(at);
        assert!(err.contains(&format!("crash point {label}: aborting")), "{what} died elsewhere: {err}");
    }
}

/// A device store driven through `converge client --json`.
struct Device {
    db: PathBuf,
    url: String,
    token: String,
}

impl Device {
    fn new(dir: &Path, name: &str, srv: &ServerProcess, token: &str) -> Device {
        Device { db: dir.join(format!("{name}.db")), url: srv.url(), token: token.to_owned() }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(["client", "--db", self.db.to_str().expect("a UTF-8 path"), "--server", &self.url, "--json"])
            .args(args)
            .env("CONVERGE_TOKEN", &self.token)
            .env("CONVERGE_LOG", "warn")
            .env_remove(crash::ENV);
        c
    }

    /// A command that must succeed; its JSON document.
    fn json(&self, args: &[&str]) -> Value {
        let out = self.command(args).output().expect("run converge");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "converge client {args:?} failed ({}): {err}", out.status);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("converge client {args:?}: not JSON ({e})"))
    }

    /// Runs a command with the crash point `at` armed; it must die there.
    fn crash(&self, at: &str, args: &[&str]) {
        let out = self.command(args).env(crash::ENV, at).output().expect("run converge");
        assert_aborted(
            out.status,
            Some(&String::from_utf8_lossy(&out.stderr)),
            at,
            &format!("converge client {args:?}"),
        );
    }

    fn put(&self, id: &str, fields: Value) {
        self.json(&["put", "notes", id, &fields.to_string()]);
    }

    /// A `sync` that must exit 0: `{"report": …, "status": …}`.
    fn sync(&self) -> Value {
        self.json(&["sync"])
    }

    /// The notes: record id → (version, fields, state).
    fn notes(&self) -> BTreeMap<String, (u64, Value, String)> {
        let list = self.json(&["list", "notes"]);
        list.as_array()
            .expect("a JSON array")
            .iter()
            .map(|r| {
                let id = r["record_id"].as_str().expect("a record id").to_owned();
                let state = r["state"].as_str().expect("a state").to_owned();
                (id, (r["version"].as_u64().expect("a version"), r["fields"].clone(), state))
            })
            .collect()
    }

    /// Asserts the device holds exactly `expected`, every record synced, nothing pending, and
    /// its file is intact.
    fn assert_synced(&self, expected: &Notes) {
        let notes = self.notes();
        assert!(notes.values().all(|n| n.2 == "synced"), "records not synced");
        let notes: Notes = notes.into_iter().map(|(id, (v, f, _))| (id, (v, f))).collect();
        assert_eq!(&notes, expected, "the device's records");
        let status = self.json(&["status"]);
        assert_eq!((status["pending"].as_u64(), status["open_conflicts"].as_u64()), (Some(0), Some(0)), "{status}");
        assert!(self.outbox().is_empty(), "the outbox is empty");
        self.integrity_ok();
    }

    fn open(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(&self.db).expect("open the device db")
    }

    fn integrity_ok(&self) {
        let check: String = self.open().query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
        assert_eq!(check, "ok", "PRAGMA integrity_check of {}", self.db.display());
    }

    /// The outbox in order: (state, batch id).
    fn outbox(&self) -> Vec<(String, Option<String>)> {
        let conn = self.open();
        let mut stmt = conn.prepare("SELECT state, batch_id FROM outbox ORDER BY seq").unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<Result<_, _>>().unwrap()
    }

    fn record_rows(&self) -> u64 {
        self.open().query_row("SELECT COUNT(*) FROM records", [], |r| r.get::<_, i64>(0)).unwrap() as u64
    }

    fn cursor(&self) -> Option<String> {
        self.open().query_row("SELECT cursor FROM sync_state", [], |r| r.get(0)).unwrap()
    }
}

/// The notes of a brand-new device after one sync, over gRPC (the devices under test use HTTP,
/// so both wires drive every scenario).
fn fresh_notes(srv: &ServerProcess, dir: &Path, token: &str) -> Notes {
    let mut fresh = Device::new(dir, &format!("fresh-{}", uuid::Uuid::now_v7().simple()), srv, token);
    fresh.url = srv.grpc_url();
    fresh.sync();
    fresh.notes().into_iter().map(|(id, (v, f, _))| (id, (v, f))).collect()
}

/// What the server holds, read from its own tables.
struct ServerTables {
    /// (record id, version, fields) of every record.
    records: Notes,
    /// The sum of the record versions.
    version_sum: u64,
    /// The tenant's change counter: changes ever applied.
    counter: u64,
    /// Stored op results.
    op_results: u64,
    /// The idempotency keys of the stored pushes.
    pushes: Vec<String>,
}

fn server_tables(srv: &ServerProcess) -> ServerTables {
    let conn = rusqlite::Connection::open(srv.db_path()).expect("open the server db");
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok", "PRAGMA integrity_check of the server db");
    let one = |sql: &str| -> u64 { conn.query_row(sql, [TENANT], |r| r.get::<_, i64>(0)).unwrap() as u64 };
    let mut stmt = conn.prepare("SELECT record_id, version, fields FROM records WHERE tenant = ?1").unwrap();
    let records = stmt
        .query_map([TENANT], |r| {
            let fields: String = r.get(2)?;
            Ok((r.get(0)?, (r.get::<_, i64>(1)? as u64, serde_json::from_str(&fields).unwrap())))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut stmt = conn.prepare("SELECT key FROM idempotency WHERE tenant = ?1 ORDER BY created_ms").unwrap();
    let pushes = stmt.query_map([TENANT], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap();
    ServerTables {
        records,
        version_sum: one("SELECT COALESCE(SUM(version), 0) FROM records WHERE tenant = ?1"),
        counter: one("SELECT COALESCE(MAX(seq), 0) FROM counters WHERE tenant = ?1"),
        op_results: one("SELECT COUNT(*) FROM op_results WHERE tenant = ?1"),
        pushes,
    }
}

impl ServerTables {
    /// Each record exactly as expected, and every applied change counted once: the versions add
    /// up to the change counter (an op applied twice would add a version).
    fn assert_consistent(&self, expected: &Notes) {
        assert_eq!(&self.records, expected, "the server's records");
        assert_eq!(self.version_sum, self.counter, "the server's versions add up to its change counter");
    }
}
