//! `HttpClient` against a raw loopback socket that answers canned bytes: statuses without a
//! problem body, bodies that do not parse, cut connections, and the headers the client sends.

use std::net::SocketAddr;
use std::time::Duration;

use converge_core::{Code, ErrorClass, PullRequest, SyncApi};
use converge_http::HttpClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::loopback::{api_error, push_request};

/// Reads one request (head and `Content-Length` body); returns the head.
async fn read_request(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the client closed before sending a whole request");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    }
    head
}

/// A one-connection-at-a-time server that answers every request with `response` and then
/// closes; each request head goes to the returned channel.
async fn canned(response: &'static [u8]) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let head = read_request(&mut stream).await;
            let _ = tx.send(head);
            if !response.is_empty() {
                stream.write_all(response).await.unwrap();
            }
            stream.flush().await.unwrap();
            let _ = stream.shutdown().await;
            // Keep the socket open a moment so the client reads everything before the close.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (addr, rx)
}

async fn pull_error(response: &'static [u8]) -> converge_core::Error {
    let (addr, _rx) = canned(response).await;
    let client = HttpClient::new(&format!("http://{addr}"), "good").unwrap();
    client.pull(PullRequest::default()).await.unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_without_a_problem_body_fall_back_by_status() {
    let cases: [(&[u8], Code); 6] = [
        (b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: 6\r\n\r\n<html>", Code::Unavailable),
        (b"HTTP/1.1 504 Gateway Timeout\r\nContent-Length: 0\r\n\r\n", Code::Unavailable),
        (b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\noops", Code::Internal),
        (b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n", Code::Unauthorized),
        (b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n", Code::RateLimited),
        (
            b"HTTP/1.1 409 Conflict\r\nContent-Type: application/problem+json\r\nContent-Length: 39\r\n\r\n{\"code\":\"idempotency_key_in_flight\"}   ",
            Code::IdempotencyKeyInFlight,
        ),
    ];
    for (response, code) in cases {
        let e = api_error::<()>(Err(pull_error(response).await));
        assert_eq!(e.code, code, "{}", String::from_utf8_lossy(response));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_read_from_a_bare_503() {
    let response = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 0\r\n\r\n";
    let e = api_error::<()>(Err(pull_error(response).await));
    assert_eq!((e.code, e.retry_after), (Code::Unavailable, Some(Duration::from_secs(5))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_the_client_cannot_read_are_fatal() {
    for response in [
        &b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 8\r\n\r\nnot json"[..],
        &b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"[..],
        &b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nnot found"[..],
        &b"HTTP/1.1 418 I'm a teapot\r\nContent-Length: 0\r\n\r\n"[..],
    ] {
        let err = pull_error(response).await;
        assert!(matches!(err, converge_core::Error::Fatal { .. }), "{err:?} for {}", String::from_utf8_lossy(response));
        assert_eq!(err.class(), ErrorClass::Fatal);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_connections_are_offline() {
    for response in [
        // Closed without a word.
        &b""[..],
        // The body is cut short of its Content-Length.
        &b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"changes\":"[..],
        // The head is cut.
        &b"HTTP/1.1 200 OK\r\nContent-Ty"[..],
    ] {
        let err = pull_error(response).await;
        assert!(
            matches!(err, converge_core::Error::Offline { .. }),
            "{err:?} for {}",
            String::from_utf8_lossy(response)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_sends_token_key_and_trace_context() {
    let (addr, mut heads) = canned(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nIdempotent-Replayed: true\r\nContent-Length: 44\r\n\r\n{\"accepted\":[],\"conflicts\":[],\"rejected\":[]}",
    )
    .await;
    let client = HttpClient::new(&format!("http://{addr}/"), "tok-1").unwrap();
    let resp = client.push(push_request("batch-9", 1)).await.unwrap();
    assert!(resp.replayed);
    let head = heads.recv().await.unwrap().to_ascii_lowercase();
    assert!(head.starts_with("post /v1/sync/mutations http/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nauthorization: bearer tok-1\r\n"), "{head}");
    assert!(head.contains("\r\nidempotency-key: batch-9\r\n"), "{head}");
    assert!(head.contains("\r\ncontent-type: application/json\r\n"), "{head}");
    assert!(!head.contains("traceparent"), "{head}");

    client.set_token("tok-2");
    client.set_trace_id(Some("4bf92f3577b34da6a3ce929d0e0e4736")).unwrap();
    let _ = client.pull(PullRequest { cursor: Some("a b&c".into()), limit: Some(5) }).await;
    let head = heads.recv().await.unwrap().to_ascii_lowercase();
    assert!(head.starts_with("get /v1/sync/changes?cursor=a+b%26c&limit=5 http/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nauthorization: bearer tok-2\r\n"), "{head}");
    assert!(head.contains("\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{head}");

    let _ = client.pull(PullRequest::default()).await;
    let head = heads.recv().await.unwrap().to_ascii_lowercase();
    assert!(head.starts_with("get /v1/sync/changes http/1.1\r\n"), "absent parameters are omitted: {head}");
}
