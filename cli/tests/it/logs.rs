//! Logs never carry record contents, and client and server logs correlate by the cycle's trace id.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use converge_test_support::SECRET;
use serde_json::Value;

use crate::bin;

/// Field values that must never reach a log line (nor parts of them).
const SECRETS: &[&str] = &["Zanzibar-7f3a-title", "quokka-91c2-body", "ledger-55e0-private", "hunter2-d4b7"];

/// Runs `converge client …` with every log level on; returns (success, stdout, stderr).
fn client(db: &std::path::Path, url: &str, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(bin())
        .args(["client", "--db"])
        .arg(db)
        .args(["--server", url, "--token", token, "--policy", "notes=field_merge", "--json"])
        .args(args)
        .env("CONVERGE_LOG", "trace")
        .output()
        .expect("run converge client");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn a_full_sync_at_trace_level_logs_no_record_contents_and_shares_its_trace_id_with_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Command::new(bin())
        .arg("serve")
        .arg("--db")
        .arg(dir.path().join("server.db"))
        .args(["--listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--jwt-secret", SECRET])
        .env("CONVERGE_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run converge serve");
    let mut stdout = BufReader::new(server.stdout.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut url = None;
    let grpc_url = loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "converge serve exited before listening");
        let port = |scheme: &str| {
            let rest = line.split(&format!("{scheme}://127.0.0.1:")).nth(1)?;
            Some(format!("{scheme}://127.0.0.1:{}", rest.chars().take_while(char::is_ascii_digit).collect::<String>()))
        };
        url = url.or_else(|| port("http"));
        if let Some(grpc) = port("grpc") {
            break grpc;
        }
        assert!(Instant::now() < deadline, "converge serve did not say where it listens");
    };
    let url = url.expect("the HTTP address");
    let mut server_err = server.stderr.take().unwrap();
    let collector = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = server_err.read_to_string(&mut s);
        s
    });
    let token =
        converge_test_support::converge(bin(), &["token", "--tenant", "acme", "--user", "u", "--jwt-secret", SECRET])
            .unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let mut client_logs = String::new();
    // Device a syncs over HTTP, device b over gRPC.
    let mut run = |db: &std::path::Path, args: &[&str]| {
        let server = if db == b { &grpc_url } else { &url };
        let (ok, out, err) = client(db, server, &token, args);
        client_logs.push_str(&err);
        assert!(ok, "converge client {args:?} failed: {err}");
        out
    };
    // Creates, a sync, a second device, concurrent edits of the same field (a conflict the
    // policy settles, with losing values journaled), a delete.
    let fields = format!(r#"{{"title": "{}", "body": "{}", "private": "{}"}}"#, SECRETS[0], SECRETS[1], SECRETS[2]);
    run(&a, &["put", "notes", "n1", &fields]);
    run(&a, &["put", "notes", "n2", &fields]);
    let first: Value = serde_json::from_str(&run(&a, &["sync"])).unwrap();
    let trace_id = first["report"]["trace_id"].as_str().unwrap().to_owned();
    let over_grpc: Value = serde_json::from_str(&run(&b, &["sync"])).unwrap();
    let grpc_trace_id = over_grpc["report"]["trace_id"].as_str().unwrap().to_owned();
    run(&a, &["put", "notes", "n1", &format!(r#"{{"title": "{}-a"}}"#, SECRETS[3])]);
    run(&b, &["put", "notes", "n1", &format!(r#"{{"title": "{}-b"}}"#, SECRETS[3])]);
    run(&a, &["sync"]);
    let settled: Value = serde_json::from_str(&run(&b, &["sync"])).unwrap();
    assert_eq!(settled["report"]["conflicts"], 1, "the scenario includes a conflict: {settled}");
    run(&b, &["delete", "notes", "n2"]);
    run(&b, &["sync"]);
    run(&a, &["sync"]);
    let _ = server.kill();
    let _ = server.wait();
    let server_logs = collector.join().unwrap();

    assert!(client_logs.lines().count() > 10 && server_logs.lines().count() > 10, "the logs were captured");
    assert!(!server_logs.contains('\u{1b}'), "a redirected log carries no colour codes");
    for (name, logs) in [("client", &client_logs), ("server", &server_logs)] {
        for secret in SECRETS {
            // Any 8-character piece of a value counts as a leak.
            for piece in secret.as_bytes().windows(8) {
                let piece = std::str::from_utf8(piece).unwrap();
                let hit = logs.lines().find(|l| l.contains(piece));
                assert!(hit.is_none(), "the {name} log carries record contents ({piece:?}): {}", hit.unwrap());
            }
        }
    }
    // The cycle's trace id is in the client's log and in the server's spans for its requests.
    assert!(client_logs.contains(&trace_id), "the client logs its cycle's trace id");
    assert!(server_logs.contains(&trace_id), "the server logs the client's trace id (traceparent)");
    assert!(server_logs.contains(&grpc_trace_id), "and the one a gRPC call carries in its metadata");
}

/// A damaged row in the device store: every command that reads it fails with a clear error, and
/// neither the error nor the trace-level log quotes the row's contents (serde_json's own
/// messages would).
#[test]
fn a_damaged_device_row_is_reported_without_its_contents() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let local = |args: &[&str]| {
        let out = Command::new(bin())
            .args(["client", "--db"])
            .arg(&db)
            .args(args)
            .env("CONVERGE_LOG", "trace")
            .output()
            .expect("run converge client");
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (ok, out) = local(&["put", "notes", "n1", &format!(r#"{{"title": "{}"}}"#, SECRETS[0])]);
    assert!(ok, "{out}");
    // The row's fields become a JSON string holding a secret instead of an object.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let damaged = conn.execute("UPDATE records SET fields = ?1", [format!("\"{}\"", SECRETS[1])]).unwrap();
    assert_eq!(damaged, 1);
    drop(conn);
    for args in [&["get", "notes", "n1"][..], &["list", "notes"], &["put", "notes", "n1", r#"{"title": "x"}"#]] {
        let (ok, out) = local(args);
        assert!(!ok, "{args:?} read the damaged row and succeeded: {out}");
        assert!(out.contains("malformed") || out.contains("json"), "{args:?} says what is wrong: {out}");
        for piece in SECRETS[1].as_bytes().windows(8) {
            let piece = std::str::from_utf8(piece).unwrap();
            assert!(!out.contains(piece), "{args:?} quotes the row's contents ({piece:?}): {out}");
        }
    }
}
