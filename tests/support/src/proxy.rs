//! A fault-injecting HTTP/1.1 proxy on loopback, in front of a real `converge serve`.
//!
//! Just enough HTTP: one request per connection. The proxy reads the request head up to CRLFCRLF
//! and the body by `Content-Length`, forwards it on a fresh upstream connection with
//! `Connection: close` (so the response ends at EOF), answers the client with that response, its
//! `connection` header set to `close` so the client does not reuse the connection, and hangs up.
//!
//! Faults apply to the sync routes only ([`FAULTED_ROUTES`]: push and pull), never to `/healthz`
//! or any other route. The live notice stream ([`EVENTS_PATH`]) is passed through as it comes,
//! byte for byte, until either side closes; [`FaultProxy::cut_streams`] cuts the open ones and
//! [`FaultProxy::block_streams`] refuses new ones. Every request is logged ([`Seen`]) before the client gets an answer (or
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
use tokio::sync::{oneshot, watch};

use crate::rng::SplitMix64;

mod http;
#[cfg(test)]
mod tests;

use http::{Request, closing_response, problem, read_request};

/// The (method, path) pairs faults apply to: push and pull of the wire contract v1.
pub const FAULTED_ROUTES: [(&str, &str); 2] = [("POST", "/v1/sync/mutations"), ("GET", "/v1/sync/changes")];

/// The live notice stream's path.
pub const EVENTS_PATH: &str = "/v1/sync/events";

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
    /// New notice streams are closed at once while set.
    streams_blocked: bool,
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
    cut: Arc<watch::Sender<u64>>,
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
        let state: Shared = Arc::new(Mutex::new(State { mode: Mode::Pass, log: Vec::new(), streams_blocked: false }));
        let (stop_tx, stop_rx) = oneshot::channel();
        let shared = Arc::clone(&state);
        let cut = Arc::new(watch::channel(0u64).0);
        let cuts = Arc::clone(&cut);
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{port}"))
            .spawn(move || runtime.block_on(accept_loop(listener, upstream, shared, cuts, stop_rx)))
            .context("starting the proxy's thread")?;
        Ok(FaultProxy { port, state, cut, stop: Some(stop_tx), thread: Some(thread) })
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

    /// Cuts every open notice stream (both connections closed, mid-stream).
    pub fn cut_streams(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// While `blocked`, a new notice stream's connection is closed without an answer (a
    /// middlebox that drops long-lived requests).
    pub fn block_streams(&self, blocked: bool) {
        lock(&self.state).streams_blocked = blocked;
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

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    state: Shared,
    cut: Arc<watch::Sender<u64>>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    tokio::spawn(exchange(client, upstream, Arc::clone(&state), cut.subscribe()));
                }
                Err(e) => {
                    eprintln!("fault proxy: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
}

/// Serves one client connection: one request, one fault, one answer or none; or a notice
/// stream, passed through until either side closes or the test cuts it.
async fn exchange(mut client: TcpStream, upstream: SocketAddr, state: Shared, cut: watch::Receiver<u64>) {
    let req = match tokio::time::timeout(EXCHANGE_TIMEOUT, read_request(&mut client)).await {
        Ok(Ok(Some(req))) => req,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            eprintln!("fault proxy: unreadable request: {e}");
            return;
        }
        Err(_) => return,
    };
    if req.path == EVENTS_PATH {
        return stream(client, req, upstream, state, cut).await;
    }
    let served = tokio::time::timeout(EXCHANGE_TIMEOUT, async {
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

/// Passes a notice stream through until either side closes or the test cuts it.
async fn stream(
    mut client: TcpStream,
    req: Request,
    upstream: SocketAddr,
    state: Shared,
    mut cut: watch::Receiver<u64>,
) {
    let blocked = {
        let mut state = lock(&state);
        let blocked = state.streams_blocked;
        state.log.push(Seen {
            method: req.method.clone(),
            path: req.path.clone(),
            idempotency_key: None,
            traceparent: req.header("traceparent").map(str::to_owned),
            fault: if blocked { Fault::DropRequest } else { Fault::Pass },
            upstream_status: None,
        });
        blocked
    };
    if blocked {
        return;
    }
    let Ok(mut conn) = TcpStream::connect(upstream).await else { return };
    if conn.write_all(&req.upstream_head()).await.is_err() {
        return;
    }
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut conn) => {}
        _ = cut.changed() => {}
    }
    // Dropping both connections closes them.
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
