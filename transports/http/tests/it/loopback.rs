//! `HttpClient` against `serve(...)` on 127.0.0.1: the happy paths and each error class.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use converge_core::wire::Limits;
use converge_core::{ApiError, Code, ErrorClass, PullRequest, PushBatch, PushRequest, PushResponse, SyncApi};
use converge_http::{ClientConfig, HttpClient, ServerConfig, router, serve};
use tokio::sync::oneshot;

use crate::fake::{Fake, FakeAuth};
use crate::helpers::creates;

/// A server on a free loopback port; stops when dropped.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) fake: Fake,
    _stop: oneshot::Sender<()>,
}

impl Server {
    pub(crate) async fn start(limits: Limits) -> Server {
        crate::trace::init();
        let fake = Fake::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(Arc::new(fake.clone()), Arc::new(FakeAuth), ServerConfig::with_limits(limits));
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(serve(listener, app, async move {
            let _ = stopped.await;
        }));
        Server { addr, fake, _stop: stop }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

pub(crate) fn push_request(key: &str, n: usize) -> PushRequest {
    let batch: PushBatch = serde_json::from_value(creates(n)).unwrap();
    PushRequest { idempotency_key: key.to_owned(), batch }
}

#[track_caller]
pub(crate) fn api_error<T: std::fmt::Debug>(r: converge_core::Result<T>) -> ApiError {
    match r {
        Err(converge_core::Error::Api(e)) => e,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_round_trips_push_pull_record_and_replay() {
    let server = Server::start(Limits::default()).await;
    let client = HttpClient::new(&server.url(), "good").unwrap();
    let req = push_request("batch-1", 3);
    let first = client.push(req.clone()).await.unwrap();
    assert_eq!(first.accepted.len(), 3);
    assert!(!first.replayed);
    let again = client.push(req.clone()).await.unwrap();
    assert!(again.replayed);
    assert_eq!(PushResponse { replayed: false, ..again }, first);

    let page = client.pull(PullRequest { cursor: None, limit: Some(2) }).await.unwrap();
    assert_eq!((page.changes.len(), page.has_more), (2, true));
    assert_eq!(server.fake.last_pull().unwrap(), PullRequest { cursor: None, limit: Some(2) });
    let rest = client.pull(PullRequest { cursor: Some(page.cursor.clone()), limit: None }).await.unwrap();
    assert_eq!((rest.changes.len(), rest.has_more), (1, false));
    assert_eq!(server.fake.last_pull().unwrap(), PullRequest { cursor: Some(page.cursor), limit: None });

    let rid = &req.batch.mutations[0].record_id;
    let change = client.record("notes", rid).await.unwrap();
    assert_eq!((change.version, change.record_id.as_str()), (1, rid.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_keep_code_detail_and_retry_after() {
    let server = Server::start(Limits { max_batch: 2, max_body_bytes: 2048, ..Limits::default() }).await;
    let client = HttpClient::new(&server.url(), "nope").unwrap();
    let e = api_error(client.pull(PullRequest::default()).await);
    assert_eq!(e.code, Code::Unauthorized);
    client.set_token("expired");
    let err = client.pull(PullRequest::default()).await.unwrap_err();
    assert_eq!((err.code(), err.class()), (Some(Code::TokenExpired), ErrorClass::Unauthorized));
    client.set_token("good");
    client.pull(PullRequest::default()).await.unwrap();

    server.fake.fail_next(ApiError::new(Code::Unavailable, "draining").with_retry_after(Duration::from_secs(7)));
    let e = api_error(client.push(push_request("k1", 1)).await);
    assert_eq!(
        (e.code, e.detail.as_str(), e.retry_after),
        (Code::Unavailable, "draining", Some(Duration::from_secs(7)))
    );

    server.fake.fail_next(ApiError::new(Code::RateLimited, "slow").with_retry_after(Duration::from_secs(2)));
    let e = api_error(client.pull(PullRequest::default()).await);
    assert_eq!((e.code, e.retry_after), (Code::RateLimited, Some(Duration::from_secs(2))));

    server.fake.fail_next(ApiError::new(Code::IdempotencyKeyReused, "another body"));
    assert_eq!(api_error(client.push(push_request("k2", 1)).await).code, Code::IdempotencyKeyReused);

    server.fake.fail_next(converge_core::Error::store("disk full"));
    let e = api_error(client.push(push_request("k3", 1)).await);
    assert_eq!(e.code, Code::Internal);
    assert!(!e.detail.contains("disk"));

    assert_eq!(api_error(client.record("notes", "missing/one").await).code, Code::NotFound);
    assert_eq!(api_error(client.push(push_request("k4", 3)).await).code, Code::BatchTooLarge);
    let mut big = push_request("k5", 1);
    big.batch.mutations[0].patch.insert("text".into(), "x".repeat(3000).into());
    assert_eq!(api_error(client.push(big).await).code, Code::BodyTooLarge);
    assert_eq!(api_error(client.push(push_request("", 1)).await).code, Code::IdempotencyKeyMissing);
    let e = api_error(client.pull(PullRequest { cursor: Some("expired".into()), limit: None }).await);
    assert_eq!(e.code, Code::CursorExpired);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_offline() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = HttpClient::new(&format!("http://{addr}"), "good").unwrap();
    let err = client.pull(PullRequest::default()).await.unwrap_err();
    assert!(matches!(err, converge_core::Error::Offline { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Retryable);
}

/// An auth provider whose token call fails: its error keeps its class, so a passing glitch is
/// retried (never `needs_auth` waiting for a sign-in) and a refusal still asks for one.
struct FailingTokens(fn() -> converge_core::Error);

#[async_trait::async_trait]
impl converge_core::AuthProvider for FailingTokens {
    async fn token(&self) -> converge_core::Result<String> {
        Err((self.0)())
    }
    async fn refresh(&self) -> converge_core::Result<String> {
        Err((self.0)())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_auth_provider_keeps_its_error_class() {
    let server = Server::start(Limits::default()).await;
    let glitch = HttpClient::new(&server.url(), "")
        .unwrap()
        .with_auth(Arc::new(FailingTokens(|| converge_core::Error::offline("identity provider unreachable"))));
    let err = glitch.pull(PullRequest::default()).await.unwrap_err();
    assert_eq!((err.class(), err.kind()), (ErrorClass::Retryable, converge_core::ErrorKind::Network), "{err:?}");
    let signed_out = HttpClient::new(&server.url(), "")
        .unwrap()
        .with_auth(Arc::new(FailingTokens(|| ApiError::new(Code::Unauthorized, "signed out").into())));
    let err = signed_out.pull(PullRequest::default()).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Unauthorized, "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_timeout_is_offline() {
    let server = Server::start(Limits::default()).await;
    server.fake.set_delay(Duration::from_secs(5));
    let config = ClientConfig { request_timeout: Duration::from_millis(200), ..ClientConfig::default() };
    let client = HttpClient::with_config(&server.url(), "good", config).unwrap();
    let started = std::time::Instant::now();
    let err = client.push(push_request("k", 1)).await.unwrap_err();
    assert!(matches!(err, converge_core::Error::Offline { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_metrics_over_a_socket() {
    let server = Server::start(Limits::default()).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with(r#"{"status":"ok"}"#), "{out}");

    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains(r#"converge_http_requests_total{route="/healthz",status="200"} 1"#), "{out}");
}
