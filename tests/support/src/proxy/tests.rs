//! The proxy against a fake upstream: pass-through, scripted and seeded faults, rate checks.

use std::io::{Read, Write};
use std::time::Instant;

use super::http::find;
use super::*;

/// What a fake upstream received on one connection, and whether it was a whole request.
#[derive(Debug, Clone)]
struct Received {
    raw: String,
    whole: bool,
}

/// A fake server on a std listener: answers each whole request with 200 and its count.
fn upstream() -> (u16, Arc<Mutex<Vec<Received>>>) {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let whole = loop {
                if let Some(end) = find(&buf, b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                    if buf.len() >= end + 4 + len {
                        break true;
                    }
                }
                match conn.read(&mut chunk) {
                    Ok(0) | Err(_) => break false,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let n = {
                let mut seen = record.lock().unwrap();
                seen.push(Received { raw: String::from_utf8_lossy(&buf).into_owned(), whole });
                seen.len()
            };
            if whole {
                let body = format!("{{\"n\":{n}}}");
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: keep-alive\r\n\r\n{body}",
                    body.len()
                );
            }
        }
    });
    (port, seen)
}

/// Sends raw bytes to the proxy and reads its answer to EOF ("" when it hung up).
fn send(port: u16, request: &str) -> String {
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    conn.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = conn.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn push(key: &str) -> String {
    format!(
        "POST /v1/sync/mutations HTTP/1.1\r\nHost: x\r\nIdempotency-Key: {key}\r\n\
         Content-Length: 10\r\nConnection: keep-alive\r\n\r\n0123456789"
    )
}

fn wait_for(seen: &Mutex<Vec<Received>>, n: usize) -> Vec<Received> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = seen.lock().unwrap().clone();
        if now.len() >= n || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn passes_requests_and_makes_the_answer_close_the_connection() {
    let (port, seen) = upstream();
    let proxy = FaultProxy::start(port).unwrap();
    let answer = send(proxy.port(), &push("k1"));
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("{\"n\":1}"), "{answer}");
    let lower = answer.to_lowercase();
    assert_eq!(lower.matches("connection:").count(), 1, "{answer}");
    assert!(lower.contains("connection: close\r\n") && !lower.contains("keep-alive"), "{answer}");
    let got = wait_for(&seen, 1);
    assert!(got[0].whole && got[0].raw.ends_with("\r\n\r\n0123456789"), "{got:?}");
    assert!(got[0].raw.contains("Connection: close\r\n") && !got[0].raw.contains("keep-alive"), "{got:?}");
    send(proxy.port(), "GET /v1/sync/changes?cursor=abc HTTP/1.1\r\nHost: x\r\ntraceparent: 00-t-s-01\r\n\r\n");
    assert_eq!(
        proxy.log(),
        vec![
            Seen {
                method: "POST".into(),
                path: "/v1/sync/mutations".into(),
                idempotency_key: Some("k1".into()),
                traceparent: None,
                fault: Fault::Pass,
                upstream_status: Some(200),
            },
            Seen {
                method: "GET".into(),
                path: "/v1/sync/changes".into(),
                idempotency_key: None,
                traceparent: Some("00-t-s-01".into()),
                fault: Fault::Pass,
                upstream_status: Some(200),
            },
        ]
    );
    assert!(wait_for(&seen, 2)[1].raw.starts_with("GET /v1/sync/changes?cursor=abc HTTP/1.1\r\n"));
}

#[test]
fn scripted_faults_apply_in_order_to_sync_routes_only() {
    let (port, seen) = upstream();
    let proxy = FaultProxy::start(port).unwrap();
    proxy.script(vec![
        Fault::DropRequest,
        Fault::Unauthorized,
        Fault::Unavailable { retry_after_secs: 7 },
        Fault::Duplicate,
        Fault::CutBody,
        Fault::DropResponse,
        Fault::Delay(Duration::from_millis(50)),
    ]);
    // Not a sync route: passes and uses up no fault.
    assert!(send(proxy.port(), "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").starts_with("HTTP/1.1 200"));
    assert_eq!(wait_for(&seen, 1).len(), 1);

    assert_eq!(send(proxy.port(), &push("a")), "", "DropRequest hangs up");
    let answer = send(proxy.port(), &push("b"));
    assert!(answer.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{answer}");
    assert!(answer.contains("content-type: application/problem+json\r\n"), "{answer}");
    let body: serde_json::Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["code"], "token_expired");
    assert_eq!(body["status"], 401);
    let answer = send(proxy.port(), &push("c"));
    assert!(answer.starts_with("HTTP/1.1 503 ") && answer.contains("retry-after: 7\r\n"), "{answer}");
    assert!(answer.contains("\"code\":\"unavailable\""), "{answer}");
    assert_eq!(seen.lock().unwrap().len(), 1, "none of these reached the server");

    let answer = send(proxy.port(), &push("d"));
    assert!(answer.ends_with("{\"n\":3}"), "Duplicate answers with the second response: {answer}");
    assert_eq!(send(proxy.port(), &push("e")), "", "CutBody hangs up");
    let got = wait_for(&seen, 4);
    assert!(!got[3].whole && got[3].raw.ends_with("\r\n\r\n01234"), "half the body, then EOF: {got:?}");
    assert_eq!(send(proxy.port(), &push("f")), "", "DropResponse hangs up");
    assert!(wait_for(&seen, 5)[4].whole, "DropResponse forwards the whole request");
    let started = Instant::now();
    assert!(send(proxy.port(), &push("g")).ends_with("{\"n\":6}"));
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert!(send(proxy.port(), &push("h")).ends_with("{\"n\":7}"), "after the script, requests pass");

    let log = proxy.log();
    let faults: Vec<Fault> = log.iter().map(|s| s.fault).collect();
    assert_eq!(
        faults,
        vec![
            Fault::Pass,
            Fault::DropRequest,
            Fault::Unauthorized,
            Fault::Unavailable { retry_after_secs: 7 },
            Fault::Duplicate,
            Fault::CutBody,
            Fault::DropResponse,
            Fault::Delay(Duration::from_millis(50)),
            Fault::Pass,
        ]
    );
    let statuses: Vec<Option<u16>> = log.iter().map(|s| s.upstream_status).collect();
    let ok = Some(200);
    assert_eq!(statuses, vec![ok, None, None, None, ok, None, ok, ok, ok]);
    let keys: Vec<&str> = log[1..].iter().map(|s| s.idempotency_key.as_deref().unwrap()).collect();
    assert_eq!(keys, ["a", "b", "c", "d", "e", "f", "g", "h"]);
    proxy.clear_log();
    assert!(proxy.log().is_empty());
}

#[test]
fn random_faults_replay_from_the_seed() {
    let (port, _seen) = upstream();
    let faults_of = |seed: u64| {
        let proxy = FaultProxy::start(port).unwrap();
        proxy.random(seed, Rates::uniform(0.7, Duration::from_millis(5)));
        for i in 0..40 {
            send(proxy.port(), &push(&format!("k{i}")));
        }
        proxy.pass_all();
        send(proxy.port(), &push("after"));
        let log = proxy.log();
        assert_eq!(log.last().map(|s| s.fault), Some(Fault::Pass));
        log.iter().map(|s| s.fault).collect::<Vec<_>>()
    };
    let a = faults_of(42);
    assert_eq!(a, faults_of(42), "the same seed gives the same faults");
    assert_ne!(a, faults_of(43));
    let faulted = a.iter().filter(|f| **f != Fault::Pass).count();
    assert!((15..=40).contains(&faulted), "about 70% of 40 requests faulted, got {faulted}: {a:?}");
}

#[test]
#[should_panic(expected = "add up to at most 1")]
fn rates_over_one_are_refused() {
    let (port, _seen) = upstream();
    FaultProxy::start(port).unwrap().random(1, Rates::uniform(1.5, Duration::ZERO));
}
