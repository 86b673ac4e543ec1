//! The real `converge` client through a fault-injecting proxy to a real `converge serve`: each
//! fault alone on the first push, then seeded random faults over a few hundred writes. After the
//! faults stop, the device and a fresh one agree with the server, nothing is lost, and nothing is
//! applied twice (the server's record versions add up to the ops it stored, one each).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use converge_test_support::{Fault, FaultProxy, Rates, Seen, ServerProcess, SplitMix64, converge_status};
use serde_json::{Map, Value, json};

use crate::{bin, server};

const TENANT: &str = "acme";
const PUSH: &str = "/v1/sync/mutations";

/// A device store driven through `converge client --json`.
struct Device {
    db: PathBuf,
    url: String,
    token: String,
}

impl Device {
    fn new(dir: &Path, name: &str, url: &str, token: &str) -> Device {
        Device { db: dir.join(format!("{name}.db")), url: url.to_owned(), token: token.to_owned() }
    }

    /// Runs a client command: (success, stdout, stderr).
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let db = self.db.to_str().expect("a UTF-8 path");
        let mut all = vec!["client", "--db", db, "--server", &self.url, "--token", &self.token, "--json"];
        all.extend_from_slice(args);
        converge_status(bin(), &all).expect("run converge")
    }

    /// A command that must succeed; its JSON document.
    fn json(&self, args: &[&str]) -> Value {
        let (ok, out, err) = self.run(args);
        assert!(ok, "converge client {args:?} failed: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    fn put(&self, id: &str, fields: &Value) {
        self.json(&["put", "notes", id, &fields.to_string()]);
    }

    fn delete(&self, id: &str) {
        self.json(&["delete", "notes", id]);
    }

    /// One `sync`: its JSON document when it exits 0, its stderr when it does not.
    fn sync(&self) -> Result<Value, String> {
        match self.run(&["sync"]) {
            (true, out, _) => Ok(serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))),
            (false, _, err) => Err(err),
        }
    }

    fn status(&self) -> Value {
        self.json(&["status"])
    }

    /// The live notes: record id → the record as `list --json` shows it.
    fn notes(&self) -> BTreeMap<String, Value> {
        let list = self.json(&["list", "notes"]);
        list.as_array()
            .expect("a JSON array")
            .iter()
            .map(|r| (r["record_id"].as_str().expect("a record id").to_owned(), r.clone()))
            .collect()
    }
}

/// A server, a proxy in front of it, and device `a` syncing through the proxy.
struct Setup {
    srv: ServerProcess,
    proxy: FaultProxy,
    dir: tempfile::TempDir,
    token: String,
    a: Device,
}

impl Setup {
    fn new() -> Setup {
        let srv = server();
        let token = srv.token(TENANT, "alice").expect("a token");
        let proxy = FaultProxy::start(srv.port).expect("start the proxy");
        let dir = tempfile::tempdir().expect("a temp dir");
        let a = Device::new(dir.path(), "a", &proxy.url(), &token);
        Setup { srv, proxy, dir, token, a }
    }

    /// The notes of a brand-new device after one sync straight from the server, over gRPC (the
    /// faulted device uses HTTP through the proxy, so both wires drive every case).
    fn fresh_notes(&self) -> BTreeMap<String, Value> {
        let name = format!("fresh-{}", uuid::Uuid::now_v7().simple());
        let fresh = Device::new(self.dir.path(), &name, &self.srv.grpc_url(), &self.token);
        fresh.sync().expect("a fresh device syncs straight from the server");
        fresh.notes()
    }

    /// What the server applied, from its own tables: (sum of record versions, op results stored,
    /// change numbers taken). Each applied op makes exactly one new version, takes one change
    /// number and is stored once under its op id, so the three are equal unless an op was
    /// applied twice (or lost its stored result).
    fn applied(&self) -> (u64, u64, u64) {
        let conn = rusqlite::Connection::open(self.srv.db_path()).expect("open the server db");
        let one = |sql: &str| -> u64 {
            conn.query_row(sql, [TENANT], |r| r.get::<_, i64>(0)).map(|n| n as u64).expect("query the server db")
        };
        (
            one("SELECT COALESCE(SUM(version), 0) FROM records WHERE tenant = ?1"),
            one("SELECT COUNT(*) FROM op_results WHERE tenant = ?1"),
            one("SELECT COALESCE(MAX(seq), 0) FROM counters WHERE tenant = ?1"),
        )
    }

    /// The pushes in the proxy's log.
    fn pushes(&self) -> Vec<Seen> {
        self.proxy.log().into_iter().filter(|s| s.path == PUSH).collect()
    }
}

/// (version, fields) per record id, from `list --json` records.
fn versions_and_fields(notes: &BTreeMap<String, Value>) -> BTreeMap<String, (u64, Value)> {
    notes.iter().map(|(id, r)| (id.clone(), (r["version"].as_u64().expect("a version"), r["fields"].clone()))).collect()
}

fn expect(rows: &[(&str, u64, Value)]) -> BTreeMap<String, (u64, Value)> {
    rows.iter().map(|(id, v, f)| ((*id).to_owned(), (*v, f.clone()))).collect()
}

/// The server's notes before the faulted batch was applied.
fn before() -> BTreeMap<String, (u64, Value)> {
    expect(&[
        ("n1", 1, json!({"title": "one", "n": 0})),
        ("n2", 1, json!({"title": "two", "n": 0})),
        ("n3", 1, json!({"title": "three"})),
    ])
}

/// The server's notes once the faulted batch was applied (n3 deleted: not listed).
fn after() -> BTreeMap<String, (u64, Value)> {
    expect(&[
        ("n1", 2, json!({"title": "one", "n": 1})),
        ("n2", 2, json!({"title": "two", "n": 1})),
        ("n4", 1, json!({"title": "four"})),
    ])
}

/// Creates three notes and syncs them, then writes a batch of four ops (two edits, a create and
/// a delete), scripts `fault` for the next push and syncs once through it. Returns the setup and
/// that sync's outcome.
fn first_push_through(fault: Fault) -> (Setup, Result<Value, String>, Duration) {
    let s = Setup::new();
    s.a.put("n1", &json!({"title": "one", "n": 0}));
    s.a.put("n2", &json!({"title": "two", "n": 0}));
    s.a.put("n3", &json!({"title": "three"}));
    let first = s.a.sync().expect("the first sync, without faults");
    assert_eq!(first["report"]["accepted"], 3);
    assert_eq!(s.fresh_notes().len(), 3);

    s.a.put("n1", &json!({"n": 1}));
    s.a.put("n2", &json!({"n": 1}));
    s.a.put("n4", &json!({"title": "four"}));
    s.a.delete("n3");
    assert_eq!(s.a.status()["pending"], 4);
    s.proxy.clear_log();
    s.proxy.script(vec![fault]);
    let started = Instant::now();
    let outcome = s.a.sync();
    let took = started.elapsed();
    let pushes = s.pushes();
    assert_eq!(pushes.first().map(|p| p.fault), Some(fault), "the fault hit the first push: {pushes:?}");
    (s, outcome, took)
}

/// A sync that failed: non-zero exit, a message naming `needle`, every op kept for the next sync.
fn assert_failed_and_kept(s: &Setup, outcome: Result<Value, String>, needle: &str) {
    let err = outcome.expect_err("the faulted sync cannot finish");
    assert!(err.contains(needle), "the message names {needle:?}: {err}");
    assert!(err.contains("the next `sync` resumes"), "{err}");
    let status = s.a.status();
    assert_eq!(status["pending"], 4, "nothing dropped: {status}");
    assert_eq!((status["needs_action"].as_u64(), status["dead_letters"].as_u64()), (Some(0), Some(0)), "{status}");
}

/// The next sync (no faults left) resends the failed push under the same Idempotency-Key, and
/// it reaches the server.
fn assert_resent_with_the_same_key(s: &Setup) {
    let report = s.a.sync().expect("the next sync finishes");
    assert_eq!(report["report"]["accepted"], 4, "{report}");
    let pushes = s.pushes();
    assert_eq!(pushes.len(), 2, "one failed push and one resend: {pushes:?}");
    assert!(pushes[0].idempotency_key.is_some());
    assert_eq!(pushes[1].idempotency_key, pushes[0].idempotency_key, "the resend uses the same key");
    assert_eq!((pushes[1].fault, pushes[1].upstream_status), (Fault::Pass, Some(200)));
}

/// Once quiet: the device, a fresh device and the server agree, every op was applied once, and
/// a further edit makes exactly one more version.
fn assert_converged_once(s: &Setup) {
    let status = s.a.status();
    assert_eq!((status["pending"].as_u64(), status["dead_letters"].as_u64()), (Some(0), Some(0)), "{status}");
    assert_eq!(status["open_conflicts"], 0, "{status}");
    let mine = s.a.notes();
    assert!(mine.values().all(|r| r["state"] == "synced"), "{mine:?}");
    assert_eq!(versions_and_fields(&mine), after(), "the device holds every record, each applied once");
    assert_eq!(s.fresh_notes(), mine, "a fresh device sees what the writing device sees");
    // 3 creates, 2 edits, 1 delete, 1 create: seven ops, seven versions, seven change numbers.
    assert_eq!(s.applied(), (7, 7, 7), "(sum of versions, op results, change numbers)");
    let fresh = Device::new(s.dir.path(), "tombstone-check", &s.srv.url(), &s.token);
    fresh.sync().expect("sync");
    let n3 = fresh.json(&["get", "notes", "n3"]);
    assert_eq!((n3["deleted"].as_bool(), n3["version"].as_u64()), (Some(true), Some(2)), "{n3}");

    // Created once and edited twice: version 3.
    s.a.put("n1", &json!({"n": 2}));
    s.a.sync().expect("sync");
    let fresh = s.fresh_notes();
    assert_eq!(fresh["n1"]["version"], 3, "{}", fresh["n1"]);
    assert_eq!(fresh["n1"]["fields"], json!({"title": "one", "n": 2}));
    assert_eq!(s.applied(), (8, 8, 8));
}

#[test]
fn a_dropped_request_applies_nothing_and_the_resend_applies_once() {
    let (s, outcome, _) = first_push_through(Fault::DropRequest);
    assert_failed_and_kept(&s, outcome, "offline");
    assert_eq!(s.pushes()[0].upstream_status, None);
    assert_eq!(versions_and_fields(&s.fresh_notes()), before(), "the dropped push applied nothing");
    assert_resent_with_the_same_key(&s);
    assert_converged_once(&s);
}

#[test]
fn a_dropped_response_is_resent_with_the_same_key_and_applied_once() {
    let (s, outcome, _) = first_push_through(Fault::DropResponse);
    assert_failed_and_kept(&s, outcome, "offline");
    assert_eq!(s.pushes()[0].upstream_status, Some(200), "the server answered the first push");
    assert_eq!(versions_and_fields(&s.fresh_notes()), after(), "the server applied it before the answer was lost");
    assert_eq!(s.applied(), (7, 7, 7));
    assert_resent_with_the_same_key(&s);
    assert_eq!(s.applied(), (7, 7, 7), "the resend replayed the stored answer and applied nothing");
    assert_converged_once(&s);
}

#[test]
fn a_duplicated_push_is_applied_once() {
    let (s, outcome, _) = first_push_through(Fault::Duplicate);
    let report = outcome.expect("a duplicated push still answers");
    assert_eq!(report["report"]["accepted"], 4, "{report}");
    let pushes = s.pushes();
    assert_eq!(pushes.len(), 1, "{pushes:?}");
    assert_eq!(pushes[0].upstream_status, Some(200));
    assert_converged_once(&s);
}

#[test]
fn a_delayed_push_and_pull_finish() {
    let delay = Duration::from_millis(300);
    let (s, outcome, took) = first_push_through(Fault::Delay(delay));
    let report = outcome.expect("a slow push still finishes");
    assert_eq!(report["report"]["accepted"], 4, "{report}");
    assert!(took >= delay, "the sync waited for the delayed push ({took:?})");
    assert_converged_once(&s);
}

#[test]
fn a_cut_body_applies_nothing_and_the_resend_applies_once() {
    let (s, outcome, _) = first_push_through(Fault::CutBody);
    assert_failed_and_kept(&s, outcome, "offline");
    assert_eq!(s.pushes()[0].upstream_status, None);
    assert_eq!(versions_and_fields(&s.fresh_notes()), before(), "half a body applied nothing");
    assert_eq!(s.applied(), (3, 3, 3));
    assert_resent_with_the_same_key(&s);
    assert_converged_once(&s);
}

#[test]
fn a_401_stops_the_sync_keeps_the_batch_and_the_next_sync_resends_it() {
    let (s, outcome, _) = first_push_through(Fault::Unauthorized);
    assert_failed_and_kept(&s, outcome, "converge token");
    let status = s.a.status();
    assert_eq!(status["phase"], "needs_auth", "a later run still shows it: {status}");
    assert_eq!(status["last_error"]["code"], "token_expired", "{status}");
    assert_eq!(versions_and_fields(&s.fresh_notes()), before(), "the refused push applied nothing");
    assert_resent_with_the_same_key(&s);
    assert_converged_once(&s);
}

#[test]
fn a_503_with_retry_after_stops_the_sync_and_the_next_sync_works() {
    let (s, outcome, _) = first_push_through(Fault::Unavailable { retry_after_secs: 1 });
    assert_failed_and_kept(&s, outcome, "unavailable");
    let status = s.a.status();
    assert_eq!(status["last_error"]["code"], "unavailable", "{status}");
    assert_eq!(status["last_error"]["class"], "retryable", "{status}");
    assert_eq!(versions_and_fields(&s.fresh_notes()), before(), "the refused push applied nothing");
    assert_resent_with_the_same_key(&s);
    assert_converged_once(&s);
}

/// Prints the seed when a soak fails.
struct SeedOnPanic(u64);

impl Drop for SeedOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the proxy soak failed with seed {:#x}; it replays with the same seed", self.0);
        }
    }
}

/// A fault's name, without its parameters.
fn kind(fault: Fault) -> &'static str {
    match fault {
        Fault::Pass => "pass",
        Fault::DropRequest => "drop_request",
        Fault::DropResponse => "drop_response",
        Fault::Duplicate => "duplicate",
        Fault::Delay(_) => "delay",
        Fault::CutBody => "cut_body",
        Fault::Unauthorized => "unauthorized",
        Fault::Unavailable { .. } => "unavailable",
    }
}

/// ~200 writes (creates, edits, deletes over up to 60 notes) interleaved with syncs through
/// random faults (20-40% of pushes and pulls, all kinds), then faults off and a sync, then every
/// device and the server agree, every write is there, and nothing was applied twice.
fn soak(seed: u64) {
    let _seed = SeedOnPanic(seed);
    let started = Instant::now();
    let mut rng = SplitMix64::new(seed);
    let s = Setup::new();
    let total = 0.2 + 0.2 * rng.unit();
    s.proxy.random(seed, Rates::uniform(total, Duration::from_millis(200)));

    // The model: what each note must hold at the end (None: deleted), and its number of writes.
    let mut model: BTreeMap<String, Option<Map<String, Value>>> = BTreeMap::new();
    let mut writes: BTreeMap<String, u64> = BTreeMap::new();
    let mut synced = (0, 0);
    for step in 0..200u64 {
        let live: Vec<String> = model.iter().filter(|(_, f)| f.is_some()).map(|(id, _)| id.clone()).collect();
        let roll = rng.unit();
        if model.len() < 60 && (live.is_empty() || roll < 0.35) {
            let id = format!("r{:02}", model.len());
            let fields = json!({"title": format!("{id} created"), "n": step});
            s.a.put(&id, &fields);
            model.insert(id.clone(), fields.as_object().cloned());
            *writes.entry(id).or_default() += 1;
        } else if rng.below(10) == 0 {
            let id = &live[rng.below(live.len() as u64) as usize];
            s.a.delete(id);
            model.insert(id.clone(), None);
            *writes.entry(id.clone()).or_default() += 1;
        } else {
            let id = &live[rng.below(live.len() as u64) as usize];
            let patch = match rng.below(4) {
                0 => json!({"n": step}),
                1 => json!({"title": format!("{id} edited at {step}")}),
                2 => json!({"extra": step, "n": step}),
                _ => json!({"extra": null}),
            };
            s.a.put(id, &patch);
            let fields = model.get_mut(id).and_then(Option::as_mut).expect("a live note");
            for (k, v) in patch.as_object().expect("an object") {
                if v.is_null() {
                    fields.remove(k);
                } else {
                    fields.insert(k.clone(), v.clone());
                }
            }
            *writes.entry(id.clone()).or_default() += 1;
        }
        if rng.below(6) == 0 {
            match s.a.sync() {
                Ok(_) => synced.0 += 1,
                Err(_) => synced.1 += 1,
            }
        }
    }

    // Faults off: the next sync resumes where the last one stopped and finishes.
    s.proxy.pass_all();
    let last = s.a.sync().unwrap_or_else(|e| panic!("the first sync without faults failed: {e}"));
    let log = s.proxy.log();
    let faulted = log.iter().filter(|x| x.fault != Fault::Pass).count();
    let kinds: BTreeSet<&str> = log.iter().filter(|x| x.fault != Fault::Pass).map(|x| kind(x.fault)).collect();
    eprintln!(
        "seed {seed:#x}: fault rate {total:.2}, {} requests, {faulted} faulted ({kinds:?}), syncs ok/failed {synced:?}",
        log.len()
    );
    assert!(synced.1 > 0 && faulted >= 5 && kinds.len() >= 3, "the faults must bite: {faulted} faults, {kinds:?}");
    let status = last["status"].clone();
    assert_eq!((status["pending"].as_u64(), status["dead_letters"].as_u64()), (Some(0), Some(0)), "{status}");
    assert_eq!(status["open_conflicts"], 0, "{status}");

    // Every batch the client pushed was answered by the server in the end.
    let mut answered: BTreeMap<String, bool> = BTreeMap::new();
    for p in log.iter().filter(|x| x.path == PUSH) {
        let key = p.idempotency_key.clone().expect("every push has a key");
        let got_it =
            matches!(p.fault, Fault::Pass | Fault::Delay(_) | Fault::Duplicate) && p.upstream_status == Some(200);
        *answered.entry(key).or_default() |= got_it;
    }
    let unanswered: Vec<&String> = answered.iter().filter(|(_, ok)| !**ok).map(|(k, _)| k).collect();
    assert!(unanswered.is_empty(), "batches never answered: {unanswered:?}");

    // The writing device holds exactly the model, every note synced.
    let mine = s.a.notes();
    let expected: BTreeMap<String, Value> =
        model.iter().filter_map(|(id, f)| f.clone().map(|f| (id.clone(), Value::Object(f)))).collect();
    let held: BTreeMap<String, Value> = mine.iter().map(|(id, r)| (id.clone(), r["fields"].clone())).collect();
    assert_eq!(held, expected, "the device holds every write, nothing lost");
    for (id, r) in &mine {
        assert_eq!(r["state"], "synced", "{r}");
        let v = r["version"].as_u64().expect("a version");
        assert!((1..=writes[id]).contains(&v), "{id}: version {v} after {} writes", writes[id]);
    }
    // A fresh device straight from the server sees the same, and the server applied each op once.
    assert_eq!(s.fresh_notes(), mine, "a fresh device sees what the writing device sees");
    let (versions, results, changes) = s.applied();
    assert_eq!((versions, results), (changes, changes), "(sum of versions, op results) vs change numbers");
    let took = started.elapsed();
    eprintln!("seed {seed:#x}: {} notes live, {changes} ops applied, {took:.1?}", mine.len());
    assert!(took < Duration::from_secs(60), "the soak took {took:?}");
}

#[test]
fn soak_random_faults_seed_1() {
    soak(0x5eed_0001);
}

#[test]
fn soak_random_faults_seed_2() {
    soak(0x5eed_0002);
}

#[test]
fn soak_random_faults_seed_3() {
    soak(0x5eed_0003);
}
