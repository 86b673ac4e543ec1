//! The FFI benchmark (`cargo bench -p converge-ffi --no-default-features`): a local write
//! through the FFI object an iOS app calls against `Engine::put` on the same kind of store, in
//! one run; and how soon a record listener registered through the FFI object hears a change
//! pulled from a real server on loopback.
//!
//! It lives here, not in `converge bench`, so that nothing depends on converge-ffi (building it
//! links a large cdylib). Arguments: `--writes N` (default 10,000), `--rounds N` (3),
//! `--changes N` (200).

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use converge_core::{Engine, Fields, Tenancy};
use converge_ffi::{ClientOptions, ConvergeClient, Record, RecordListener, TokenError, TokenProvider};
use converge_sqlite::SqliteStore;
use hdrhistogram::Histogram;
use serde_json::json;

/// A fixed token, as a foreign token provider would hand it.
struct Fixed(String);

impl TokenProvider for Fixed {
    fn token(&self) -> Result<String, TokenError> {
        Ok(self.0.clone())
    }
    fn refresh(&self) -> Result<String, TokenError> {
        Err(TokenError::SignInRequired { message: "a fixed token".into() })
    }
}

fn client(path: &Path, url: &str, token: &str) -> Result<Arc<ConvergeClient>> {
    let path = path.to_str().context("a UTF-8 path")?.to_owned();
    Ok(ConvergeClient::open(path, url.to_owned(), Arc::new(Fixed(token.to_owned())), ClientOptions::default())?)
}

fn fields(i: u64) -> Fields {
    json!({"title": format!("note {i}"), "body": "a short body of a note, as an app writes it", "n": i})
        .as_object()
        .cloned()
        .unwrap_or_default()
}

fn histogram() -> Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000_000, 3)?)
}

fn us(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// `Engine::put` with a fields map, against `ConvergeClient::put` with the same fields as JSON
/// text (made before the clock starts, as `Codable` would) returning a `Record` with JSON text.
fn writes(dir: &Path, n: u64, rounds: u32) -> Result<()> {
    println!("Local writes ({n} per variant and round, {rounds} rounds interleaved; file-backed stores):");
    let (mut engine_h, mut ffi_h) = (histogram()?, histogram()?);
    for round in 0..rounds {
        let engine = Engine::builder(Box::new(SqliteStore::open(dir.join(format!("engine-{round}.db")))?)).build()?;
        for i in 0..n {
            let (id, f) = (uuid::Uuid::now_v7().to_string(), fields(i));
            let t = Instant::now();
            engine.put("notes", &id, f)?;
            engine_h.record(t.elapsed().as_nanos().max(1) as u64)?;
        }
        drop(engine);
        let ffi = client(&dir.join(format!("ffi-{round}.db")), "http://127.0.0.1:9", "")?;
        for i in 0..n {
            let (id, text) = (uuid::Uuid::now_v7().to_string(), serde_json::Value::Object(fields(i)).to_string());
            let t = Instant::now();
            ffi.put("notes".into(), id, text)?;
            ffi_h.record(t.elapsed().as_nanos().max(1) as u64)?;
        }
        ffi.close();
    }
    for (name, h) in [("Engine::put (baseline)", &engine_h), ("ConvergeClient::put (FFI object)", &ffi_h)] {
        println!(
            "  {name:<34} p50 {:>6.1} µs  p99 {:>6.1} µs  p99.9 {:>7.1} µs",
            us(h, 0.5),
            us(h, 0.99),
            us(h, 0.999)
        );
    }
    println!(
        "  FFI object / Engine::put: p50 ×{:.2} (+{:.1} µs), p99 ×{:.2} (target: ≤ ×1.5 plus a few µs)",
        us(&ffi_h, 0.5) / us(&engine_h, 0.5),
        us(&ffi_h, 0.5) - us(&engine_h, 0.5),
        us(&ffi_h, 0.99) / us(&engine_h, 0.99),
    );
    Ok(())
}

/// Sends the moment each record change reached the listener.
struct Stamps(Sender<(String, Instant)>);

impl RecordListener for Stamps {
    fn on_change(&self, _entity: String, record_id: String, _record: Option<Record>) {
        let _ = self.0.send((record_id, Instant::now()));
    }
    fn on_missed(&self, _count: u64) {}
}

/// The next stamp for `id`.
fn stamp_of(rx: &Receiver<(String, Instant)>, id: &str) -> Result<Instant> {
    loop {
        let (got, at) = rx.recv_timeout(Duration::from_secs(10)).context("no record change within 10 s")?;
        if got == id {
            return Ok(at);
        }
    }
}

/// A server on loopback (the SQLite server store, HTTP), and a token for it.
async fn server(dir: &Path) -> Result<(String, String)> {
    let store = converge_server::SqliteServerStore::open(&dir.join("server.db"))?;
    let service: Arc<dyn Tenancy> =
        Arc::new(converge_server::SyncService::new(Arc::new(store), converge_core::Limits::default()));
    let auth = Arc::new(converge_server::JwtAuth::new(b"ffi-bench"));
    let token = auth.issue("bench", "bench", Duration::from_secs(3600))?;
    let app = converge_http::server::router(service, auth, converge_http::server::ServerConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(converge_http::server::serve(listener, app, std::future::pending()));
    Ok((url, token))
}

/// Device A writes and pushes one record at a time; device B pulls it. Timed from the engine's
/// own change notice on B (sent right after the pulled page commits; a raw receiver's thread
/// stamps it) to B's listener call through the FFI object, which reads and converts the record
/// as an app's listener gets it.
async fn listeners(dir: &Path, changes: usize) -> Result<()> {
    println!("\nRecord listeners: {changes} changes pulled by device B from a server on loopback:");
    let (url, token) = server(dir).await?;
    let (a, b) = (client(&dir.join("a.db"), &url, &token)?, client(&dir.join("b.db"), &url, &token)?);
    let (tx, heard) = channel();
    let _listening = b.on_record_change(Some("notes".into()), Arc::new(Stamps(tx)))?;
    let (raw_tx, raw) = channel();
    let mut notices = b.engine()?.watch_records();
    std::thread::spawn(move || {
        while let Ok(change) = notices.blocking_recv() {
            if raw_tx.send((change.record_id, Instant::now())).is_err() {
                return;
            }
        }
    });
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for i in 0..changes {
        let id = a.create("notes".into(), format!(r#"{{"n": {i}}}"#))?.id;
        ensure!(a.sync_now().await?.accepted == 1, "device A's write was not accepted");
        ensure!(b.sync_now().await?.pulled >= 1, "device B pulled nothing");
        let (notice, call) = (stamp_of(&raw, &id)?, stamp_of(&heard, &id)?);
        h.record(call.saturating_duration_since(notice).as_micros().max(1) as u64)?;
    }
    println!(
        "  the engine's change notice -> the FFI listener's call: p50 {} µs  p99 {} µs  max {} µs",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max()
    );
    a.close();
    b.close();
    Ok(())
}

fn arg(name: &str, default: u64) -> Result<u64> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args.get(i + 1).context("a number after the flag")?.parse().context("a number"),
        None => Ok(default),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    if cfg!(debug_assertions) {
        println!("(debug build: figures are not representative; `cargo bench -p converge-ffi` builds for release)");
    }
    let dir = tempfile::tempdir()?;
    writes(dir.path(), arg("--writes", 10_000)?, arg("--rounds", 3)? as u32)?;
    listeners(dir.path(), arg("--changes", 200)? as usize).await
}
