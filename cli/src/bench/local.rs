//! The local-write leg of `converge bench`: `Engine::put` latency against a raw rusqlite
//! transaction writing the same rows, back to back and in app-like bursts; beside it the same
//! write on an encrypted store (the FFI object's writes are timed by `cargo bench -p
//! converge-ffi`).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use converge_core::Engine;
use converge_sqlite::{Key, Options, SqliteStore};
use hdrhistogram::Histogram;
use rusqlite::params;
use uuid::Uuid;

use super::fields;

pub(super) struct Lat(Histogram<u64>);

impl Lat {
    pub(super) fn new() -> Result<Lat> {
        Ok(Lat(Histogram::new_with_bounds(1, 60_000_000_000, 3)?))
    }
    fn merge(&mut self, other: &Lat) -> Result<()> {
        self.0.add(&other.0)?;
        Ok(())
    }
    pub(super) fn record(&mut self, d: Duration) {
        let _ = self.0.record((d.as_nanos() as u64).max(1));
    }
    /// Writes per second at this latency's mean (the timed transactions only).
    pub(super) fn rate(&self) -> f64 {
        1e9 / self.0.mean().max(1.0)
    }
    pub(super) fn q(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1000.0
    }
    /// How many writes took longer than `micros`.
    fn over(&self, micros: u64) -> u64 {
        self.0.count_between(micros * 1000 + 1, u64::MAX)
    }
    pub(super) fn row(&self, name: &str, base: Option<&Lat>) {
        print!(
            "  {name:<52} mean {:>6.1} µs  p50 {:>6.1} µs  p99 {:>7.1} µs  p99.9 {:>8.1} µs  max {:>8.1} µs  >0.5 ms {:>4}",
            self.0.mean() / 1000.0,
            self.q(0.5),
            self.q(0.99),
            self.q(0.999),
            self.0.max() as f64 / 1000.0,
            self.over(500)
        );
        if let Some(b) = base {
            print!(
                "   ×{:.2} / ×{:.2} / ×{:.2}",
                self.q(0.5) / b.q(0.5),
                self.q(0.99) / b.q(0.99),
                self.q(0.999) / b.q(0.999)
            );
        }
        println!();
    }
}

/// Shows how far a long leg got on one line of a terminal; where standard error is not a
/// terminal (a log, a pipe shared with the figures), nothing, so the figures stay whole.
fn progress(line: &str) {
    use std::io::IsTerminal;
    if std::io::stderr().is_terminal() {
        eprint!("\r{line:40}\r");
    }
}

/// App-like bursts: a short idle pause after every 200 writes (not timed).
fn idle(i: u64, pace: bool) {
    if pace && i % 200 == 199 {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The baseline: a raw rusqlite transaction inserting the same record row and outbox row.
pub(super) fn raw_baseline(path: &Path, n: u64, autocheckpoint: bool, pace: bool) -> Result<Lat> {
    drop(SqliteStore::open_with(path, Options { background_checkpoints: false, ..Options::default() })?);
    let mut conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    if !autocheckpoint {
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    }
    let mut lat = Lat::new()?;
    for i in 0..n {
        let id = Uuid::now_v7().to_string();
        let f = serde_json::Value::Object(fields(i)).to_string();
        let hlc = format!("{:013}-0000-bench", 1_764_064_800_000u64 + i);
        let t = Instant::now();
        let tx = conn.transaction()?;
        tx.prepare_cached(
            "INSERT INTO records (entity, record_id, server_version, server_fields, server_deleted, fields, deleted, \
             pending, conflicts, failed) VALUES ('notes', ?1, 0, '{}', 0, ?2, 0, 1, 0, 0)",
        )?
        .execute(params![id, f])?;
        tx.prepare_cached(
            "INSERT INTO outbox (op_id, entity, record_id, op, patch, base_version, hlc, check_mode, state, \
             batch_id, attempts, last_error, created_ms) VALUES (?1, 'notes', ?2, 'create', ?3, 0, ?4, 'fields', \
             'pending', NULL, 0, NULL, 0)",
        )?
        .execute(params![Uuid::now_v7().to_string(), id, f, hlc])?;
        tx.commit()?;
        lat.record(t.elapsed());
        idle(i, pace);
    }
    Ok(lat)
}

fn engine_puts(path: &Path, n: u64, background: bool, key: Option<Key>, pace: bool) -> Result<Lat> {
    let store =
        SqliteStore::open_with(path, Options { background_checkpoints: background, key, ..Options::default() })?;
    let engine = Engine::builder(Box::new(store)).build()?;
    let mut lat = Lat::new()?;
    for i in 0..n {
        let id = Uuid::now_v7().to_string();
        let f = fields(i);
        let t = Instant::now();
        engine.put("notes", &id, f)?;
        lat.record(t.elapsed());
        idle(i, pace);
    }
    Ok(lat)
}

/// Runs the leg: `n` writes per variant and round, `rounds` rounds interleaved.
pub(super) fn run(dir: &Path, n: u64, rounds: u32) -> Result<()> {
    println!(
        "\nLocal write latency ({n} writes per variant and round; file-backed store, WAL, synchronous=NORMAL; \
         {rounds} rounds, interleaved):"
    );
    let names = [
        "baseline: raw rusqlite tx (SQLite autocheckpoint)",
        "baseline: raw rusqlite tx (autocheckpoint off)",
        "Engine::put, checkpoints on the commit path",
        "Engine::put, background checkpoints (default)",
        "Engine::put, encrypted store (SQLCipher, raw key)",
    ];
    for pace in [false, true] {
        if pace {
            println!("\n  bursts of 200 writes with 10 ms idle between them (as an app writes):");
        } else {
            println!("\n  back-to-back writes (no idle time for a checkpoint to finish):");
        }
        let mut lats = [Lat::new()?, Lat::new()?, Lat::new()?, Lat::new()?, Lat::new()?];
        for round in 0..rounds {
            let p = |name: &str| dir.join(format!("{name}-{pace}-{round}.db"));
            lats[0].merge(&raw_baseline(&p("raw"), n, true, pace)?)?;
            lats[1].merge(&raw_baseline(&p("raw-off"), n, false, pace)?)?;
            lats[2].merge(&engine_puts(&p("engine-inline"), n, false, None, pace)?)?;
            lats[3].merge(&engine_puts(&p("engine"), n, true, None, pace)?)?;
            lats[4].merge(&engine_puts(&p("engine-encrypted"), n, true, Some(Key::Raw([7; 32])), pace)?)?;
            progress(&format!("  round {}/{} done", round + 1, rounds));
        }
        progress("");
        for (i, (name, lat)) in names.iter().zip(&lats).enumerate() {
            lat.row(name, (i > 0).then_some(&lats[0]));
        }
        let (base, base_off, eng) = (&lats[0], &lats[1], &lats[3]);
        println!(
            "  Engine::put (default): p50 ×{:.2} the baseline (target ≤ ×1.3), ×{:.2} the raw tx without checkpoints; p99.9 {:.3} ms (target < 1 ms)",
            eng.q(0.5) / base.q(0.5),
            eng.q(0.5) / base_off.q(0.5),
            eng.q(0.999) / 1000.0,
        );
        let enc = &lats[4];
        println!(
            "  encrypted: p50 ×{:.2} Engine::put on a plain store (+{:.1} µs), p99 ×{:.2}",
            enc.q(0.5) / eng.q(0.5),
            enc.q(0.5) - eng.q(0.5),
            enc.q(0.99) / eng.q(0.99),
        );
    }
    println!(
        "  ratios are against the first baseline: p50 / p99 / p99.9; >0.5 ms counts the writes over half a millisecond \
         (the tail behind p99.9)"
    );
    Ok(())
}
