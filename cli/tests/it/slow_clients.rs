//! Slow and idle clients against a real `converge serve`: 3,000 connections that never finish
//! their headers do not hold up a normal request and are closed within the header timeout; a
//! body that never arrives is refused; an idle connection is closed; the connection limit holds
//! new connections in the accept queue until one frees; silent gRPC connections are closed too.

use std::time::{Duration, Instant};

use converge_test_support::ServerProcess;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::bin;

const HALF_OPEN: usize = 3000;

fn addr(srv: &ServerProcess) -> String {
    format!("127.0.0.1:{}", srv.port)
}

/// Reads until the server closes the connection (EOF or reset); how long that took.
async fn closed_after(mut s: TcpStream, started: Instant) -> Duration {
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return started.elapsed(),
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_thousand_half_open_connections_neither_block_a_request_nor_stay_open() {
    let srv = ServerProcess::start_with(bin(), &["--header-timeout", "3s"]).unwrap();
    let started = Instant::now();
    let mut open = Vec::with_capacity(HALF_OPEN);
    for _ in 0..HALF_OPEN {
        let mut s = TcpStream::connect(addr(&srv)).await.expect("connect");
        s.write_all(b"POST /v1/sync/mutations HTTP/1.1\r\nHost: x\r\nContent-Type: applic").await.unwrap();
        open.push(s);
    }
    let opened = started.elapsed();
    // A normal request, on a fresh connection, while all of them hang.
    let client = crate::http();
    let mut times = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let r = client.get(format!("{}/healthz", srv.url())).send().await.expect("healthz");
        assert_eq!(r.status(), 200);
        times.push(t.elapsed());
    }
    times.sort();
    let p50 = times[times.len() / 2];
    eprintln!("{HALF_OPEN} half-open connections made in {opened:?}; healthz p50 {p50:?}, max {:?}", times[9]);
    assert!(p50 < Duration::from_millis(100), "p50 {p50:?}");
    // Every half-open connection is closed by the server, within the timeout after it was made.
    let waits: Vec<_> = open.into_iter().map(|s| tokio::spawn(closed_after(s, started))).collect();
    let mut latest = Duration::ZERO;
    for w in waits {
        let after = tokio::time::timeout(Duration::from_secs(30), w).await.expect("closed within 30 s").unwrap();
        latest = latest.max(after);
    }
    eprintln!("the last half-open connection was closed {latest:?} after the first was opened");
    assert!(latest < opened + Duration::from_secs(3) + Duration::from_secs(5), "{latest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_is_refused_and_an_idle_connection_closed() {
    let srv = ServerProcess::start_with(bin(), &["--body-timeout", "1s", "--idle-timeout", "2s"]).unwrap();
    let token = srv.token("acme", "u").unwrap();
    let mut s = TcpStream::connect(addr(&srv)).await.unwrap();
    let head = format!(
        "POST /v1/sync/mutations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nIdempotency-Key: k1\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"device_id\""
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let t = Instant::now();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut answer)).await.expect("an answer").unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("application/problem+json") && answer.contains("invalid_request"), "{answer}");
    assert!(t.elapsed() >= Duration::from_millis(900), "after the body timeout, not before: {:?}", t.elapsed());

    // A connection that says nothing is closed after the idle timeout.
    let idle = TcpStream::connect(addr(&srv)).await.unwrap();
    let t = Instant::now();
    let after = tokio::time::timeout(Duration::from_secs(20), closed_after(idle, t)).await.expect("closed");
    assert!(after >= Duration::from_millis(1900), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_limit_a_request_waits_for_a_free_connection() {
    let srv = ServerProcess::start_with(bin(), &["--max-connections", "20", "--header-timeout", "2s"]).unwrap();
    let mut hold = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(addr(&srv)).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        hold.push(s);
    }
    let t = Instant::now();
    let r = crate::http().get(format!("{}/healthz", srv.url())).send().await.expect("served once a slot frees");
    assert_eq!(r.status(), 200);
    let waited = t.elapsed();
    eprintln!("the 21st connection was served after {waited:?}");
    assert!(waited >= Duration::from_millis(1000), "it waited for the header timeout to free a slot: {waited:?}");
    drop(hold);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_grpc_connections_neither_block_a_call_nor_stay_open() {
    let srv = ServerProcess::start_with(bin(), &["--idle-timeout", "3s"]).unwrap();
    let grpc = format!("127.0.0.1:{}", srv.grpc_port);
    let started = Instant::now();
    // Half of them send the start of the HTTP/2 preface, half nothing at all.
    let mut open = Vec::with_capacity(HALF_OPEN);
    for i in 0..HALF_OPEN {
        let mut s = TcpStream::connect(&grpc).await.expect("connect");
        if i % 2 == 0 {
            s.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        }
        open.push(s);
    }
    let token = srv.token("t1", "u1").unwrap();
    let api =
        converge_connect::connect(&format!("grpc://{grpc}"), std::sync::Arc::new(converge_core::StaticToken(token)))
            .unwrap();
    let call = Instant::now();
    let page = api.pull(converge_core::PullRequest::default()).await.expect("a normal call is served");
    let took = call.elapsed();
    assert_eq!(page.cursor, "c0");
    assert!(took < Duration::from_secs(2), "a call took {took:?} beside {HALF_OPEN} silent connections");
    // Every silent connection is closed within the idle timeout (and some slack for a busy box).
    let closed: Vec<_> = open.into_iter().map(|s| tokio::spawn(closed_after(s, started))).collect();
    let mut latest = Duration::ZERO;
    for c in closed {
        let after = tokio::time::timeout(Duration::from_secs(30), c).await.expect("closed within 30 s").unwrap();
        latest = latest.max(after);
    }
    assert!(latest >= Duration::from_secs(3), "closed before the idle timeout: {latest:?}");
    eprintln!("grpc: a call took {took:?} beside {HALF_OPEN} silent connections; all closed by {latest:?}");
}
