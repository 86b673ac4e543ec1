//! `converge bench`: local writes against a raw SQLite baseline, push throughput through a real
//! server on loopback, and an end-to-end leg timing, all measured in the same run.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use clap::Args;
use converge_core::check::Rules;
use converge_core::{Engine, EngineConfig, Fields, Hlc, Mutation, Op, PushBatch, PushRequest, SyncApi};
use converge_http::client::HttpClient;
use converge_server::JwtAuth;
use converge_sqlite::{Options, SqliteStore};
use hdrhistogram::Histogram;
use rusqlite::params;
use serde_json::json;
use uuid::Uuid;

use crate::serve::{DEV_SECRET, start};

/// Options of `converge bench`.
#[derive(Args)]
pub(crate) struct BenchArgs {
    /// Local writes per variant and round.
    #[arg(long, default_value_t = 10_000)]
    writes: u64,
    /// Rounds of the local write variants, run interleaved to even out machine noise.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Ops for the push and end-to-end legs.
    #[arg(long, default_value_t = 10_000)]
    ops: usize,
}

fn fields(i: u64) -> Fields {
    json!({"title": format!("note {i}"), "body": "a short body of text that a user typed", "done": false, "n": i})
        .as_object()
        .cloned()
        .unwrap_or_default()
}

struct Lat(Histogram<u64>);

impl Lat {
    fn new() -> Result<Lat> {
        Ok(Lat(Histogram::new_with_bounds(1, 60_000_000_000, 3)?))
    }
    fn merge(&mut self, other: &Lat) -> Result<()> {
        self.0.add(&other.0)?;
        Ok(())
    }
    fn record(&mut self, d: Duration) {
        let _ = self.0.record((d.as_nanos() as u64).max(1));
    }
    fn q(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1000.0
    }
    fn row(&self, name: &str, base: Option<&Lat>) {
        print!(
            "  {name:<52} p50 {:>8.1} µs  p99 {:>8.1} µs  p99.9 {:>8.1} µs  max {:>8.1} µs",
            self.q(0.5),
            self.q(0.99),
            self.q(0.999),
            self.0.max() as f64 / 1000.0
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

/// App-like bursts: a short idle pause after every 200 writes (not timed).
fn idle(i: u64, pace: bool) {
    if pace && i % 200 == 199 {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The baseline: a raw rusqlite transaction inserting the same record row and outbox row.
fn raw_baseline(path: &Path, n: u64, autocheckpoint: bool, pace: bool) -> Result<Lat> {
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

fn engine_puts(path: &Path, n: u64, background: bool, pace: bool) -> Result<Lat> {
    let store = SqliteStore::open_with(path, Options { background_checkpoints: background, ..Options::default() })?;
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

fn mutation(i: usize, device: &str) -> Mutation {
    Mutation {
        op_id: Uuid::now_v7(),
        entity: "notes".into(),
        record_id: Uuid::now_v7().to_string(),
        op: Op::Create,
        base_version: 0,
        patch: fields(i as u64),
        hlc: Hlc { millis: 1_764_064_800_000 + i as u64, counter: 0, device: device.into() },
        check: Default::default(),
    }
}

async fn push_throughput(api: &HttpClient, ops: usize, batch: usize) -> Result<f64> {
    let device = format!("bench-{batch}");
    let all: Vec<Mutation> = (0..ops).map(|i| mutation(i, &device)).collect();
    let t = Instant::now();
    for chunk in all.chunks(batch) {
        let resp = api
            .push(PushRequest {
                idempotency_key: Uuid::now_v7().to_string(),
                batch: PushBatch { device_id: device.clone(), mutations: chunk.to_vec() },
            })
            .await?;
        ensure!(resp.accepted.len() == chunk.len(), "the server did not accept every op");
    }
    Ok(ops as f64 / t.elapsed().as_secs_f64())
}

pub(crate) async fn run(args: BenchArgs) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let n = args.writes;
    println!("converge bench — {} local writes per variant and round, {} ops per sync leg", n, args.ops);
    if cfg!(debug_assertions) {
        println!("(debug build: figures are not representative; use `cargo run --release -p converge-cli -- bench`)");
    }

    println!(
        "\nLocal write latency (file-backed store, WAL, synchronous=NORMAL; {} rounds, interleaved):",
        args.rounds
    );
    let names = [
        "baseline: raw rusqlite tx (SQLite autocheckpoint)",
        "baseline: raw rusqlite tx (autocheckpoint off)",
        "Engine::put, checkpoints on the commit path",
        "Engine::put, background checkpoints (default)",
    ];
    for pace in [false, true] {
        if pace {
            println!("\n  bursts of 200 writes with 10 ms idle between them (as an app writes):");
        } else {
            println!("\n  back-to-back writes (no idle time for a checkpoint to finish):");
        }
        let mut lats = [Lat::new()?, Lat::new()?, Lat::new()?, Lat::new()?];
        for round in 0..args.rounds {
            let p = |name: &str| dir.path().join(format!("{name}-{pace}-{round}.db"));
            lats[0].merge(&raw_baseline(&p("raw"), n, true, pace)?)?;
            lats[1].merge(&raw_baseline(&p("raw-off"), n, false, pace)?)?;
            lats[2].merge(&engine_puts(&p("engine-inline"), n, false, pace)?)?;
            lats[3].merge(&engine_puts(&p("engine"), n, true, pace)?)?;
            eprint!("\r  round {}/{} done", round + 1, args.rounds);
        }
        eprint!("\r{:40}\r", "");
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
    }
    println!("  ratios are against the first baseline: p50 / p99 / p99.9");

    let server =
        start(&dir.path().join("server.db"), "127.0.0.1:0".parse()?, DEV_SECRET, Rules::default(), None).await?;
    let auth = JwtAuth::new(DEV_SECRET.as_bytes());
    let token = |t: &str| auth.issue(t, "bench", Duration::from_secs(3600));
    println!("\nPush throughput through a real server on loopback ({} ops):", args.ops);
    let api = HttpClient::new(&server.url(), token("push")?)?;
    for batch in [50, 500] {
        let rate = push_throughput(&api, args.ops, batch).await?;
        println!("  batch {batch:>3}: {rate:>10.0} ops/s");
    }

    println!("\nEnd to end: {} ops written on device A, pushed, pulled by a fresh device B:", args.ops);
    for batch_size in [50, 500] {
        let tenant = format!("e2e-{batch_size}");
        let api_a = Arc::new(HttpClient::new(&server.url(), token(&tenant)?)?);
        let api_b = Arc::new(HttpClient::new(&server.url(), token(&tenant)?)?);
        let cfg = EngineConfig { batch_size, pull_limit: 1000, ..EngineConfig::default() };
        let a = Engine::builder(Box::new(SqliteStore::open(dir.path().join(format!("a{batch_size}.db")))?))
            .api(api_a)
            .config(cfg)
            .build()?;
        let b = Engine::builder(Box::new(SqliteStore::open(dir.path().join(format!("b{batch_size}.db")))?))
            .api(api_b)
            .config(cfg)
            .build()?;
        let t = Instant::now();
        for i in 0..args.ops {
            a.create("notes", fields(i as u64))?;
        }
        let write = t.elapsed();
        let t = Instant::now();
        let pushed = a.sync_once().await?;
        let push = t.elapsed();
        let t = Instant::now();
        let pulled = b.sync_once().await?;
        let pull = t.elapsed();
        ensure!(pushed.accepted as usize == args.ops, "device A pushed {} of {}", pushed.accepted, args.ops);
        ensure!(b.list("notes")?.len() == args.ops, "device B did not receive every record");
        let rate = |d: Duration| args.ops as f64 / d.as_secs_f64();
        println!(
            "  batch {batch_size:>3}: write {:>6.2} s ({:>8.0} ops/s)  push {:>6.2} s ({:>8.0} ops/s)  pull {:>6.2} s ({:>8.0} ops/s, {} pages)",
            write.as_secs_f64(),
            rate(write),
            push.as_secs_f64(),
            rate(push),
            pull.as_secs_f64(),
            rate(pull),
            pulled.pages
        );
    }
    println!(
        "  for scale: a CouchDB-style peer (PouchDB through express-pouchdb) does about 1,800-2,000 docs/s per leg here"
    );
    server.stop().await?;
    Ok(())
}
