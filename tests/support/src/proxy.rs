//! A fault-injecting HTTP/1.1 proxy on loopback, in front of a real `converge serve`.
//!
//! Just enough HTTP: one request per connection. The proxy reads the request head up to CRLFCRLF
//! and the body by `Content-Length`, forwards it on a fresh upstream connection with
//! `Connection: close` (so the response ends at EOF), answers the client with that response, its
//! `connection` header set to `close` so the client does not reuse the connection, and hangs up.
//!
//! Faults apply to the sync routes only ([`FAULTED_ROUTES`]: push and pull), never to `/healthz`
//! or any other route. Every request is logged ([`Seen`]) before the client gets an answer (or
//! the connection closes), so a test that waited for its client can read the log; bodies are
//! never logged.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::rng::SplitMix64;

/// The (method, path) pairs faults apply to: push and pull of the wire contract v1.
pub const FAULTED_ROUTES: [(&str, &str); 2] = [("POST", "/v1/sync/mutations"), ("GET", "/v1/sync/changes")];

const MAX_HEAD: usize = 64 << 10;
const MAX_BODY: usize = 16 << 20;
/// How long one exchange (client request, upstream round trips, answer) may take in all.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(60);
/// `Retry-After` of an `Unavailable` chosen in random mode.
const RANDOM_RETRY_AFTER_SECS: u64 = 1;

/// What the proxy does to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward it and answer with the server's response.
    Pass,
    /// Close the client's connection without forwarding anything.
    DropRequest,
    /// Forward it, read the server's whole response (so the server has applied it), then close
    /// the client's connection without answering.
    DropResponse,
    /// Forward it twice, one after the other; answer with the second response.
    Duplicate,
    /// Wait, then pass.
    Delay(Duration),
    /// Forward the head and only the first half of the body, then close both sides. A request
    /// without a body reaches the server whole; only its answer is lost.
    CutBody,
    /// Answer 401 `token_expired` (problem+json) without forwarding.
    Unauthorized,
    /// Answer 503 `unavailable` (problem+json) with `Retry-After`, without forwarding.
    Unavailable {
        /// The `Retry-After` value, in seconds.
        retry_after_secs: u64,
    },
}

/// The chance of each fault per faulted request in random mode; the rest pass.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rates {
    /// [`Fault::DropRequest`].
    pub drop_request: f64,
    /// [`Fault::DropResponse`].
    pub drop_response: f64,
    /// [`Fault::Duplicate`].
    pub duplicate: f64,
    /// [`Fault::Delay`], uniformly up to `max_delay`.
    pub delay: f64,
    /// [`Fault::CutBody`].
    pub cut_body: f64,
    /// [`Fault::Unauthorized`].
    pub unauthorized: f64,
    /// [`Fault::Unavailable`] with `Retry-After: 1`.
    pub unavailable: f64,
    /// The longest delay.
    pub max_delay: Duration,
}

impl Rates {
    /// A total fault rate spread evenly over the seven faults.
    pub fn uniform(total: f64, max_delay: Duration) -> Rates {
        let each = total / 7.0;
        Rates {
            drop_request: each,
            drop_response: each,
            duplicate: each,
            delay: each,
            cut_body: each,
            unauthorized: each,
            unavailable: each,
            max_delay,
        }
    }

    fn table(&self) -> [(f64, Fault); 7] {
        [
            (self.drop_request, Fault::DropRequest),
            (self.drop_response, Fault::DropResponse),
            (self.duplicate, Fault::Duplicate),
            (self.delay, Fault::Delay(Duration::ZERO)),
            (self.cut_body, Fault::CutBody),
            (self.unauthorized, Fault::Unauthorized),
            (self.unavailable, Fault::Unavailable { retry_after_secs: RANDOM_RETRY_AFTER_SECS }),
        ]
    }

    fn pick(&self, rng: &mut SplitMix64) -> Fault {
        let u = rng.unit();
        let mut acc = 0.0;
        for (p, fault) in self.table() {
            acc += p;
            if u < acc {
                return match fault {
                    Fault::Delay(_) => Fault::Delay(self.max_delay.mul_f64(rng.unit())),
                    other => other,
                };
            }
        }
        Fault::Pass
    }
}

/// One request as the proxy saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The request method.
    pub method: String,
    /// The request path, without the query.
    pub path: String,
    /// The `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
    /// The `traceparent` header.
    pub traceparent: Option<String>,
    /// What the proxy did to it.
    pub fault: Fault,
    /// The status of the upstream response the proxy read (the second one for `Duplicate`);
    /// `None` when nothing reached the server or no whole response came back.
    pub upstream_status: Option<u16>,
}

/// Which faults the next requests get.
enum Mode {
    Pass,
    Script(VecDeque<Fault>),
    Random { rng: SplitMix64, rates: Rates },
}

struct State {
    mode: Mode,
    log: Vec<Seen>,
}

impl State {
    fn next_fault(&mut self) -> Fault {
        match &mut self.mode {
            Mode::Pass => Fault::Pass,
            Mode::Script(queue) => {
                let fault = queue.pop_front().unwrap_or(Fault::Pass);
                if queue.is_empty() {
                    self.mode = Mode::Pass;
                }
                fault
            }
            Mode::Random { rng, rates } => rates.pick(rng),
        }
    }
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A loopback proxy with its own thread and tokio runtime; dropping it stops it.
pub struct FaultProxy {
    port: u16,
    state: Shared,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port in front of `127.0.0.1:upstream_port`, passing
    /// everything until told otherwise.
    pub fn start(upstream_port: u16) -> Result<FaultProxy> {
        let std_listener = StdListener::bind(("127.0.0.1", 0)).context("binding the proxy's port")?;
        std_listener.set_nonblocking(true)?;
        let port = std_listener.local_addr()?.port();
        let upstream = SocketAddr::from(([127, 0, 0, 1], upstream_port));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the proxy's runtime")?;
        let listener = {
            let _entered = runtime.enter();
            TcpListener::from_std(std_listener)?
        };
        let state: Shared = Arc::new(Mutex::new(State { mode: Mode::Pass, log: Vec::new() }));
        let (stop_tx, stop_rx) = oneshot::channel();
        let shared = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{port}"))
            .spawn(move || runtime.block_on(accept_loop(listener, upstream, shared, stop_rx)))
            .context("starting the proxy's thread")?;
        Ok(FaultProxy { port, state, stop: Some(stop_tx), thread: Some(thread) })
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The proxy's base URL, to hand to a client instead of the server's.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The next faulted requests get these faults, in order; the ones after them pass.
    pub fn script(&self, faults: Vec<Fault>) {
        lock(&self.state).mode = if faults.is_empty() { Mode::Pass } else { Mode::Script(faults.into()) };
    }

    /// Each faulted request from now on gets a fault drawn from `rates` by a generator seeded
    /// with `seed` (the same seed and the same requests give the same faults). Panics if the
    /// rates are negative or add up to more than 1.
    pub fn random(&self, seed: u64, rates: Rates) {
        let sum: f64 = rates.table().iter().map(|(p, _)| p).sum();
        assert!(
            rates.table().iter().all(|(p, _)| *p >= 0.0) && sum <= 1.0 + 1e-9,
            "fault rates must be at least 0 and add up to at most 1: {rates:?}"
        );
        lock(&self.state).mode = Mode::Random { rng: SplitMix64::new(seed), rates };
    }

    /// Every request from now on passes.
    pub fn pass_all(&self) {
        lock(&self.state).mode = Mode::Pass;
    }

    /// Every request seen so far, in arrival order.
    pub fn log(&self) -> Vec<Seen> {
        lock(&self.state).log.clone()
    }

    /// Forgets the log.
    pub fn clear_log(&self) {
        lock(&self.state).log.clear();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, state: Shared, mut stop: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    tokio::spawn(exchange(client, upstream, Arc::clone(&state)));
                }
                Err(e) => {
                    eprintln!("fault proxy: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

/// Serves one client connection: one request, one fault, one answer or none.
async fn exchange(mut client: TcpStream, upstream: SocketAddr, state: Shared) {
    let served = tokio::time::timeout(EXCHANGE_TIMEOUT, async {
        let req = match read_request(&mut client).await {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(e) => {
                eprintln!("fault proxy: unreadable request: {e}");
                return;
            }
        };
        let faulted = FAULTED_ROUTES.iter().any(|(m, p)| *m == req.method && *p == req.path);
        let fault = if faulted { lock(&state).next_fault() } else { Fault::Pass };
        let (upstream_status, answer) = apply(fault, &req, upstream).await;
        lock(&state).log.push(Seen {
            method: req.method.clone(),
            path: req.path.clone(),
            idempotency_key: req.header("idempotency-key").map(str::to_owned),
            traceparent: req.header("traceparent").map(str::to_owned),
            fault,
            upstream_status,
        });
        if let Some(bytes) = answer {
            let _ = client.write_all(&bytes).await;
            let _ = client.shutdown().await;
        }
        // Dropping `client` closes the connection.
    })
    .await;
    if served.is_err() {
        eprintln!("fault proxy: an exchange took longer than {EXCHANGE_TIMEOUT:?}; closed");
    }
}

/// Carries out a fault: the upstream status (if a whole response came back) and the bytes to
/// answer the client with (`None`: close without answering).
async fn apply(fault: Fault, req: &Request, upstream: SocketAddr) -> (Option<u16>, Option<Vec<u8>>) {
    match fault {
        Fault::Pass => pass(req, upstream).await,
        Fault::Delay(d) => {
            tokio::time::sleep(d).await;
            pass(req, upstream).await
        }
        Fault::DropRequest => (None, None),
        Fault::DropResponse => (pass(req, upstream).await.0, None),
        Fault::Duplicate => {
            let _ = forward(req, upstream, req.body.len()).await;
            pass(req, upstream).await
        }
        Fault::CutBody => {
            let _ = forward_cut(req, upstream).await;
            (None, None)
        }
        Fault::Unauthorized => (
            None,
            Some(problem(
                401,
                "Unauthorized",
                "token_expired",
                &[("www-authenticate", "Bearer error=\"invalid_token\"")],
            )),
        ),
        Fault::Unavailable { retry_after_secs } => (
            None,
            Some(problem(503, "Service Unavailable", "unavailable", &[("retry-after", &retry_after_secs.to_string())])),
        ),
    }
}

/// Forwards the request whole and returns the response, rewritten to close the connection.
async fn pass(req: &Request, upstream: SocketAddr) -> (Option<u16>, Option<Vec<u8>>) {
    match forward(req, upstream, req.body.len()).await.ok().and_then(|raw| closing_response(&raw)) {
        Some((status, bytes)) => (Some(status), Some(bytes)),
        None => (None, None),
    }
}

/// Sends the head and the first `body_len` bytes of the body on a fresh connection and reads
/// the response to EOF.
async fn forward(req: &Request, upstream: SocketAddr, body_len: usize) -> io::Result<Vec<u8>> {
    let mut conn = TcpStream::connect(upstream).await?;
    conn.write_all(&req.upstream_head()).await?;
    conn.write_all(&req.body[..body_len]).await?;
    let mut response = Vec::new();
    conn.read_to_end(&mut response).await?;
    Ok(response)
}

/// Sends the head and half the body, then closes the connection.
async fn forward_cut(req: &Request, upstream: SocketAddr) -> io::Result<()> {
    let mut conn = TcpStream::connect(upstream).await?;
    conn.write_all(&req.upstream_head()).await?;
    conn.write_all(&req.body[..req.body.len() / 2]).await?;
    conn.flush().await
}

/// A problem+json answer made by the proxy itself.
fn problem(status: u16, title: &str, code: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let body = serde_json::json!({
        "type": "about:blank", "title": title, "status": status, "code": code,
        "detail": "injected by the test proxy",
    })
    .to_string();
    let mut head = format!(
        "HTTP/1.1 {status} {title}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("connection: close\r\n\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// Headers that describe one connection, dropped when a message is passed on.
fn hop_by_hop(name: &str) -> bool {
    ["connection", "keep-alive", "proxy-connection"].iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// The response's status and its bytes with `connection: close` instead of any connection
/// headers; `None` if it is not a whole HTTP response head.
fn closing_response(raw: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = find(raw, b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status = status_line.split(' ').nth(1)?.parse().ok()?;
    let mut out = Vec::with_capacity(raw.len() + 32);
    out.extend_from_slice(status_line.as_bytes());
    out.extend_from_slice(b"\r\n");
    for line in lines.filter(|l| !hop_by_hop(l.split(':').next().unwrap_or("").trim())) {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(&raw[end + 4..]);
    Some((status, out))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One parsed request.
struct Request {
    method: String,
    target: String,
    path: String,
    version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The head to send upstream: the same request, asking the server to close after answering.
    fn upstream_head(&self) -> Vec<u8> {
        let mut head = format!("{} {} {}\r\n", self.method, self.target, self.version);
        for (name, value) in self.headers.iter().filter(|(n, _)| !hop_by_hop(n)) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("Connection: close\r\n\r\n");
        head.into_bytes()
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// Reads one request: the head up to CRLFCRLF, then `Content-Length` bytes of body. `None` if
/// the client closed before sending anything.
async fn read_request(client: &mut TcpStream) -> io::Result<Option<Request>> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(invalid("request head too long"));
        }
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return if buf.is_empty() { Ok(None) } else { Err(invalid("closed inside the request head")) };
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| invalid("request head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version)) = (request_line.next(), request_line.next(), request_line.next())
    else {
        return Err(invalid("bad request line"));
    };
    let headers = lines
        .map(|l| l.split_once(':').map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| invalid("bad header line"))?;
    let mut req = Request {
        method: method.to_owned(),
        target: target.to_owned(),
        path: target.split('?').next().unwrap_or(target).to_owned(),
        version: version.to_owned(),
        headers,
        body: Vec::new(),
    };
    if req.header("transfer-encoding").is_some() {
        return Err(invalid("only bodies with Content-Length are supported"));
    }
    let len = match req.header("content-length") {
        Some(v) => v.parse::<usize>().map_err(|_| invalid("bad Content-Length"))?,
        None => 0,
    };
    if len > MAX_BODY {
        return Err(invalid("body too large for the proxy"));
    }
    let mut body = buf.split_off(head_end + 4);
    while body.len() < len {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Err(invalid("closed inside the request body"));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(len);
    req.body = body;
    Ok(Some(req))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::time::Instant;

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
}
