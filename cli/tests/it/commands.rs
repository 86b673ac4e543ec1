//! The `converge` command line: client commands with --json, exit codes, and the demo.

use converge_test_support::{converge, converge_status};
use serde_json::Value;

use crate::{bin, server};

fn client(db: &str, url: &str, token: &str, args: &[&str]) -> Value {
    let mut all = vec!["client", "--db", db, "--server", url, "--token", token, "--json"];
    all.extend_from_slice(args);
    let out = converge(bin(), &all).unwrap();
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn client_commands_drive_two_device_stores_through_a_server() {
    let srv = server();
    let token = srv.token("acme", "carol").unwrap();
    let url = srv.url();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.db");
    let b = dir.path().join("b.db");
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());

    let rec = client(a, &url, &token, &["put", "notes", "n1", r#"{"title": "hello", "body": "x"}"#]);
    assert_eq!(rec["state"], "pending");
    let rec = client(a, &url, &token, &["put", "notes", "n1", r#"{"body": "y"}"#]);
    assert_eq!(rec["fields"]["title"], "hello", "put on an existing record patches it");
    assert_eq!(rec["fields"]["body"], "y");
    let status = client(a, &url, &token, &["status"]);
    assert_eq!(status["pending"], 1);
    assert_eq!(status["phase"], "idle");
    let synced = client(a, &url, &token, &["sync"]);
    assert_eq!(synced["report"]["accepted"], 1);
    assert_eq!(client(a, &url, &token, &["get", "notes", "n1"])["state"], "synced");

    client(b, &url, &token, &["sync"]);
    let list = client(b, &url, &token, &["list", "notes"]);
    assert_eq!(list.as_array().unwrap().len(), 1);

    // A conflict, settled from the shell, visible in the journal.
    client(a, &url, &token, &["put", "notes", "n1", r#"{"title": "from a"}"#]);
    client(b, &url, &token, &["put", "notes", "n1", r#"{"title": "from b"}"#]);
    client(a, &url, &token, &["sync"]);
    let s = client(b, &url, &token, &["sync"]);
    assert_eq!(s["report"]["conflicts"], 1);
    assert_eq!(s["status"]["open_conflicts"], 1);
    let conflicts = client(b, &url, &token, &["conflicts"]);
    let id = conflicts[0]["id"].as_i64().unwrap().to_string();
    assert_eq!(conflicts[0]["local"]["title"], "from b");
    client(b, &url, &token, &["resolve", &id, "--accept-server"]);
    let journal = client(b, &url, &token, &["journal"]);
    assert_eq!(journal[0]["outcome"], "take_server");
    assert_eq!(journal[0]["losing"]["title"], "from b");
    assert_eq!(client(b, &url, &token, &["get", "notes", "n1"])["fields"]["title"], "from a");

    client(a, &url, &token, &["delete", "notes", "n1"]);
    client(a, &url, &token, &["sync"]);
    client(b, &url, &token, &["sync"]);
    assert!(client(b, &url, &token, &["list", "notes"]).as_array().unwrap().is_empty());
}

/// A conflict that waited for review is settled once a policy is given; the device store
/// remembers the policy for the commands after; `ENTITY=review` forgets it.
#[test]
fn a_policy_given_later_settles_open_conflicts_and_is_remembered() {
    let srv = server();
    let token = srv.token("acme", "dora").unwrap();
    let url = srv.url();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let conflict = |n: &str| {
        client(a, &url, &token, &["put", "notes", n, r#"{"title": "t0"}"#]);
        client(a, &url, &token, &["sync"]);
        client(b, &url, &token, &["sync"]);
        client(b, &url, &token, &["put", "notes", n, r#"{"title": "from b"}"#]);
        client(b, &url, &token, &["sync"]);
        client(a, &url, &token, &["put", "notes", n, r#"{"title": "from a"}"#]);
        client(a, &url, &token, &["sync"])
    };
    let first = conflict("n1");
    assert_eq!(first["status"]["open_conflicts"], 1, "no policy: it waits: {first}");
    let settled = client(a, &url, &token, &["--policy", "notes=field_merge", "sync"]);
    assert_eq!(settled["status"]["open_conflicts"], 0, "{settled}");
    // Later commands use the remembered policy without being told.
    let second = conflict("n2");
    assert_eq!(second["report"]["conflicts"], 1);
    assert_eq!(second["status"]["open_conflicts"], 0, "settled by the remembered field_merge: {second}");
    let journal = client(a, &url, &token, &["journal"]);
    assert!(journal.as_array().unwrap().iter().all(|j| j["policy"] == "field_merge"), "{journal}");
    // Forgotten, conflicts wait for review again.
    client(a, &url, &token, &["--policy", "notes=review", "status"]);
    let third = conflict("n3");
    assert_eq!(third["status"]["open_conflicts"], 1, "{third}");
}

#[test]
fn failures_exit_non_zero_with_a_clear_message_and_sync_resumes() {
    let mut srv = server();
    let token = srv.token("acme", "dave").unwrap();
    let url = srv.url();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");
    let db = db.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["client", "--db", db, "--server", &url, "--token", &token];
        all.extend_from_slice(args);
        converge_status(bin(), &all).unwrap()
    };
    let (ok, _, err) = run(&["put", "notes", "n1", "{not json"]);
    assert!(!ok && err.contains("not valid JSON"), "{err}");
    let (ok, _, err) = run(&["get", "notes", "missing"]);
    assert!(!ok && err.contains("no record"), "{err}");
    let (ok, _, err) = converge_status(bin(), &["client", "--db", db, "sync"]).unwrap();
    assert!(!ok && err.contains("no token"), "{err}");
    let (ok, _, err) = run(&["--policy", "notes=coin_flip", "status"]);
    assert!(!ok && err.contains("unknown policy"), "{err}");
    let (ok, _, _) = run(&["--policy", "notes=field_merge", "status"]);
    assert!(ok);
    let (ok, _, _) = run(&["put", "notes", "n1", r#"{"a": 1}"#]);
    assert!(ok);
    srv.kill().unwrap();
    let (ok, _, err) = run(&["sync"]);
    assert!(!ok && err.contains("offline"), "{err}");
    let (_, out, _) = run(&["--json", "status"]);
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["pending"], 1, "nothing dropped while offline");
    srv.restart().unwrap();
    let (ok, out, err) = run(&["sync"]);
    assert!(ok, "{out}{err}");
    let (_, out, _) = run(&["--json", "status"]);
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["pending"], 0);
}

#[test]
fn the_demo_runs_and_converges() {
    let (ok, out, err) = converge_status(bin(), &["demo"]).unwrap();
    assert!(ok, "demo failed: {err}\n{out}");
    for needle in ["converged:", "[banner] merged update", "lines merged", "state = \"done\" on both", "needs review"] {
        assert!(out.contains(needle), "the demo output lacks {needle:?}:\n{out}");
    }
}

#[test]
fn bench_prints_figures_and_ratios() {
    let args = ["bench", "--only", "local,push,e2e", "--writes", "200", "--rounds", "1", "--ops", "200"];
    let out = converge(bin(), &args).unwrap();
    let needles = [
        "mean",
        "p99.9",
        ">0.5 ms",
        "baseline",
        "×",
        "batch  50",
        "batch 500",
        "ops/s",
        "pull",
        "round trips",
        "whole cycle",
        "the write leg's ceiling",
    ];
    for needle in needles {
        assert!(out.contains(needle), "bench output lacks {needle:?}:\n{out}");
    }
}

#[test]
fn held_changes_are_listed_corrected_or_discarded_and_metrics_are_shown() {
    let srv =
        converge_test_support::ServerProcess::start_with(bin(), &["--max-record-bytes", "300", "--max-batch", "10"])
            .expect("start converge serve");
    let token = srv.token("acme", "dana").unwrap();
    let url = srv.url();
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.db");
    let a = a.to_str().unwrap();
    let big = format!(r#"{{"body": "{}"}}"#, "x".repeat(400));
    client(a, &url, &token, &["put", "notes", "big1", &big]);
    client(a, &url, &token, &["put", "notes", "big2", &big]);
    for i in 0..25 {
        client(a, &url, &token, &["put", "notes", &format!("n{i:02}"), r#"{"body": "ok"}"#]);
    }
    // The server takes 10 ops per batch, not 50: the client sends smaller batches by itself.
    let s = client(a, &url, &token, &["sync"]);
    assert_eq!((s["report"]["accepted"].as_u64(), s["report"]["rejected"].as_u64()), (Some(25), Some(2)), "{s}");
    assert_eq!((s["status"]["needs_action"].as_u64(), s["status"]["pending"].as_u64()), (Some(2), Some(0)), "{s}");
    let held = client(a, &url, &token, &["held"]);
    assert_eq!(held.as_array().unwrap().len(), 2, "{held}");
    assert_eq!(held[0]["state"], "needs_action");
    assert!(held[0]["error"].as_str().unwrap().starts_with("record_too_large"), "{held}");
    assert_eq!(client(a, &url, &token, &["get", "notes", "big1"])["state"], "needs_action");
    // Correcting the record sends it again; discarding keeps the values in the journal.
    client(a, &url, &token, &["put", "notes", "big1", r#"{"body": "short now"}"#]);
    let op = held[1]["op_id"].as_str().unwrap();
    client(a, &url, &token, &["discard", op]);
    let s = client(a, &url, &token, &["sync"]);
    assert_eq!(s["report"]["accepted"], 1, "{s}");
    assert_eq!((s["status"]["needs_action"].as_u64(), s["status"]["dead_letters"].as_u64()), (Some(0), Some(0)));
    assert_eq!(client(a, &url, &token, &["get", "notes", "big1"])["state"], "synced");
    let journal = client(a, &url, &token, &["journal"]);
    assert_eq!(journal[0]["outcome"], "discarded", "{journal}");
    assert_eq!(journal[0]["record_id"], "big2");
    let (ok, _, err) = converge_status(bin(), &["client", "--db", a, "discard", op]).unwrap();
    assert!(!ok && err.contains("no dead letter"), "{err}");
    // Metrics survive the process: two cycles, both complete, 26 ops answered, none conflicted.
    let m = client(a, &url, &token, &["status", "--metrics"]);
    assert_eq!(m["metrics"]["cycles"], 2, "{m}");
    assert_eq!(m["metrics"]["success_rate"], 1.0);
    assert_eq!(m["metrics"]["conflict_rate"]["notes"], 0.0);
    assert_eq!(m["metrics"]["raw"]["entities"]["notes"]["answered"], 26);
    assert!(m["metrics"]["median_converge_ms"].as_u64().is_some(), "{m}");
    let (ok, text, _) = converge_status(bin(), &["client", "--db", a, "status", "--metrics"]).unwrap();
    assert!(ok && text.contains("time to converge") && text.contains("conflict rate:    notes 0.0 %"), "{text}");
}

#[test]
fn watch_keeps_syncing_in_the_background_and_prints_each_status() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let srv = server();
    let token = srv.token("acme", "erin").unwrap();
    let url = srv.url();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    client(a, &url, &token, &["put", "notes", "w1", r#"{"t": 1}"#]);
    let mut child = Command::new(bin())
        .args(["client", "--db", a, "--server", &url, "--token", &token, "--json", "watch", "--poll", "1s"])
        .env("CONVERGE_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut wait_for = |what: &str, ok: &dyn Fn(&Value) -> bool| {
        for line in lines.by_ref() {
            let s: Value = serde_json::from_str(&line.unwrap()).unwrap();
            if ok(&s) {
                return s;
            }
        }
        panic!("the watcher ended before {what}");
    };
    wait_for("the first cycle", &|s| s["phase"] == "idle" && s["pending"] == 0 && !s["last_success_ms"].is_null());
    // A write by another process on the same store goes out with the next poll.
    client(a, &url, &token, &["put", "notes", "w2", r#"{"t": 2}"#]);
    wait_for("the poll's cycle", &|s| s["phase"] == "syncing");
    wait_for("the poll's cycle to end", &|s| s["phase"] == "idle" && s["pending"] == 0);
    let _ = child.kill();
    let _ = child.wait();
    client(b, &url, &token, &["sync"]);
    let list = client(b, &url, &token, &["list", "notes"]);
    assert_eq!(list.as_array().unwrap().len(), 2, "both writes reached the server: {list}");
}

#[test]
fn serve_beyond_loopback_needs_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let out = std::process::Command::new(bin())
        .args(["serve", "--db", db.to_str().unwrap(), "--listen", "0.0.0.0:0", "--grpc-listen", "off"])
        .env_remove("CONVERGE_JWT_SECRET")
        .output()
        .expect("run converge serve");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no token secret is set") && err.contains("CONVERGE_JWT_SECRET"), "{err}");
    assert!(!db.exists(), "nothing was opened");
    // With a secret it serves beyond loopback.
    let mut child = std::process::Command::new(bin())
        .args(["serve", "--db", db.to_str().unwrap(), "--listen", "0.0.0.0:0", "--grpc-listen", "off"])
        .env("CONVERGE_JWT_SECRET", converge_test_support::SECRET)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run converge serve");
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut first).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.contains("listening on http://0.0.0.0:"), "{first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_token_is_minted_refused_with_403_and_a_device_keeps_its_changes() {
    let srv = server();
    let secret = converge_test_support::SECRET;
    let mint = |extra: &[&str]| {
        let mut args = vec!["token", "--tenant", "acme", "--user", "ann", "--jwt-secret", secret];
        args.extend_from_slice(extra);
        converge_status(bin(), &args).unwrap()
    };
    let (ok, _, err) = mint(&["--scope", "sync:admin"]);
    assert!(!ok && err.contains("unknown scope"), "{err}");
    let (ok, _, err) = mint(&["--entities", "0bad"]);
    assert!(!ok, "{err}");
    let (ok, reader, err) = mint(&["--scope", "sync:read"]);
    assert!(ok, "{err}");
    let reader = reader.trim().to_owned();

    // Raw HTTP: 403 problem+json with the stable code, nothing applied.
    let body = crate::idempotency::batch(vec![crate::idempotency::mutation(
        &crate::idempotency::uuid(),
        "n1",
        "create",
        0,
        serde_json::json!({}),
    )]);
    let answer = crate::idempotency::push(&srv.url(), Some(&reader), Some(&crate::idempotency::uuid()), body).await;
    assert_eq!(answer.status, 403);
    assert_eq!(answer.headers.get("content-type").unwrap(), "application/problem+json");
    assert_eq!(answer.code(), "forbidden");

    // A device whose token may not push keeps its change pending, and sends it with one that may.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");
    let db = db.to_str().unwrap();
    let (ok, ..) = converge_status(bin(), &["client", "--db", db, "put", "notes", "n1", r#"{"a": 1}"#]).unwrap();
    assert!(ok);
    let (ok, _, err) =
        converge_status(bin(), &["client", "--db", db, "--server", &srv.url(), "--token", &reader, "sync"]).unwrap();
    assert!(!ok && err.contains("forbidden"), "{err}");
    let status = client(db, &srv.url(), &reader, &["status"]);
    assert_eq!((status["pending"].as_u64(), status["dead_letters"].as_u64()), (Some(1), Some(0)), "{status}");
    let full = srv.token("acme", "ann").unwrap();
    let synced = client(db, &srv.url(), &full, &["sync"]);
    assert_eq!(synced["report"]["accepted"], 1, "{synced}");
}
