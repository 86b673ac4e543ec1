//! The FFI leg of `converge bench`: how soon a record listener registered through the FFI
//! object (the path an iOS app's listener takes) hears a change pulled from the server.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use converge_ffi::{ClientOptions, ConvergeClient, Record, RecordListener, TokenError, TokenProvider};
use hdrhistogram::Histogram;

use super::offline;

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

/// A client on `path` that never syncs (its server address is closed), for timing writes.
pub(super) fn offline_client(path: &Path) -> Result<Arc<ConvergeClient>> {
    let path = path.to_str().context("a UTF-8 path")?.to_owned();
    let tokens = Arc::new(Fixed(String::new()));
    Ok(ConvergeClient::open(path, "http://127.0.0.1:9".into(), tokens, ClientOptions::default())?)
}

/// Sends the moment each record change reached the listener.
struct Stamps(Sender<(String, Instant)>);

impl RecordListener for Stamps {
    fn on_change(&self, _entity: String, record_id: String, _record: Option<Record>) {
        let _ = self.0.send((record_id, Instant::now()));
    }
    fn on_missed(&self, _count: u64) {}
}

/// The next stamp for `id` from `rx`.
fn stamp_of(rx: &Receiver<(String, Instant)>, id: &str) -> Result<Instant> {
    loop {
        let (got, at) = rx.recv_timeout(Duration::from_secs(10)).context("no record change within 10 s")?;
        if got == id {
            return Ok(at);
        }
    }
}

/// Device A writes and pushes one record at a time; device B pulls it. Timed from the engine's
/// own change notice on B (sent right after the pulled page commits; a raw receiver's thread
/// stamps it) to B's listener call through the FFI object (which reads the record and converts
/// it, as an app's listener gets it).
pub(super) async fn run(url: &str, dir: &Path, changes: usize) -> Result<()> {
    println!("\nFFI listeners: {changes} changes pulled by device B, each timed to its record listener:");
    let token = offline::token("ffi-bench")?;
    let open = |name: &str| -> Result<Arc<ConvergeClient>> {
        let path = dir.join(format!("ffi-{name}.db")).to_str().context("a UTF-8 path")?.to_owned();
        Ok(ConvergeClient::open(path, url.to_owned(), Arc::new(Fixed(token.clone())), ClientOptions::default())?)
    };
    let (a, b) = (open("a")?, open("b")?);
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
    let us = |q: f64| h.value_at_quantile(q) as f64;
    println!(
        "  engine's change notice -> FFI listener call: p50 {:.0} µs  p99 {:.0} µs  max {:.0} µs",
        us(0.5),
        us(0.99),
        h.max() as f64
    );
    a.close();
    b.close();
    Ok(())
}
