//! `converge bench`: local writes against a raw SQLite baseline, push throughput through a real
//! server on loopback, an end-to-end leg timing, the long-offline legs (a backlog drained in
//! bounded batches, a fresh device's first sync of a large feed) with this process's memory
//! sampled as they run, and the live legs (time to converge, a conflict round, fan-out). Every
//! leg that crosses the wire runs over each transport (`--transports`, HTTP and gRPC by
//! default), with gRPC's figures over HTTP's. With `--server postgres://…` the stores leg compares
//! the SQLite server store with PostgreSQL (one node, two nodes, and pgbench's floor). `--only`
//! picks legs; all run by default.

mod live;
mod local;
mod memory;
mod offline;
#[cfg(feature = "wasm")]
mod plugin;
mod server_process;
mod stores;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use clap::{Args, ValueEnum};
use converge_connect::Transport;
use converge_core::check::Rules;
use converge_core::{Engine, EngineConfig, Fields, Hlc, Mutation, Op, PullRequest, PushBatch, PushRequest, SyncApi};
use converge_sqlite::SqliteStore;
use serde_json::json;
use uuid::Uuid;

use crate::serve::{Bounds, DEV_SECRET, RunningServer, sqlite_store, start};

/// A leg of `converge bench`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Leg {
    /// Local write latency against a raw SQLite transaction.
    Local,
    /// Push throughput through a server on loopback.
    Push,
    /// Write on one device, push, pull on a fresh one.
    E2e,
    /// A backlog written offline, drained in bounded batches (with RSS samples).
    Backlog,
    /// A fresh device's first sync against a server holding many records (with RSS samples).
    FirstSync,
    /// One `resolve` call of a WASM plugin against the same rule as a Rust closure.
    Plugin,
    /// Devices with running workers: a write on A, until B holds it.
    Converge,
    /// Records edited offline on two devices, both sync, the policy settles every conflict.
    Conflict,
    /// Many subscribed devices, one writer: until all of them hold a write.
    Fanout,
    /// The server stores: SQLite against PostgreSQL with one node and two (needs --server).
    Stores,
}

/// Options of `converge bench`.
#[derive(Args)]
pub(crate) struct BenchArgs {
    /// Run only these legs (repeatable or comma separated; default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Leg>,
    /// Local writes per variant and round.
    #[arg(long, default_value_t = 10_000)]
    writes: u64,
    /// Rounds of the local write variants, run interleaved to even out machine noise.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Ops for the push and end-to-end legs.
    #[arg(long, default_value_t = 10_000)]
    ops: usize,
    /// Ops written offline for the backlog leg.
    #[arg(long, default_value_t = 100_000)]
    backlog: u64,
    /// Records the server holds for the first-sync leg.
    #[arg(long, default_value_t = 1_000_000)]
    server_records: u64,
    /// The plugin for the plugin leg (the inventory example).
    #[arg(long, default_value = "target/guests/wasm32-unknown-unknown/release/inventory.wasm")]
    plugin: std::path::PathBuf,
    /// `resolve` calls per variant in the plugin leg.
    #[arg(long, default_value_t = 20_000)]
    plugin_calls: u64,
    /// The transports of the legs that cross the wire (comma separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "http,grpc")]
    transports: Vec<Wire>,
    /// Writes timed in the converge leg.
    #[arg(long, default_value_t = 1_000)]
    converge_writes: usize,
    /// Records in the conflict round.
    #[arg(long, default_value_t = 1_000)]
    conflicts: usize,
    /// Subscribed devices in the fan-out leg.
    #[arg(long, default_value_t = 100)]
    fanout_devices: usize,
    /// Writes timed in the fan-out leg.
    #[arg(long, default_value_t = 100)]
    fanout_writes: usize,
    /// A PostgreSQL database (postgres://…) for the server-store leg, which compares it with the
    /// SQLite store; the leg's tables and pgbench's are made in it.
    #[arg(long)]
    server: Option<String>,
}

/// A transport, as `--transports` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Wire {
    /// HTTP JSON.
    Http,
    /// gRPC.
    Grpc,
}

impl From<Wire> for Transport {
    fn from(w: Wire) -> Transport {
        match w {
            Wire::Http => Transport::Http,
            Wire::Grpc => Transport::Grpc,
        }
    }
}

/// Prints, for each label measured over both transports, gRPC's figure over HTTP's.
pub(super) fn transport_ratios(what: &str, figures: impl IntoIterator<Item = (Transport, String, f64)>) {
    let figures: Vec<_> = figures.into_iter().collect();
    let parts: Vec<String> = figures
        .iter()
        .filter(|(t, ..)| *t == Transport::Grpc)
        .filter_map(|(_, label, grpc)| {
            let (.., http) = figures.iter().find(|(t, l, _)| *t == Transport::Http && l == label)?;
            Some(format!("{label} ×{:.2}", grpc / http))
        })
        .collect();
    if !parts.is_empty() {
        println!("  gRPC / HTTP, {what}: {}", parts.join(", "));
    }
}

fn fields(i: u64) -> Fields {
    json!({"title": format!("note {i}"), "body": "a short body of text that a user typed", "done": false, "n": i})
        .as_object()
        .cloned()
        .unwrap_or_default()
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

/// Calls timed for the request floor of the push leg (fewer when `--ops` is lower).
const ROUND_TRIPS: usize = 2000;

async fn push_throughput(api: &dyn SyncApi, ops: usize, batch: usize) -> Result<f64> {
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

/// The floor under every call: `calls` pulls of one change, one after another; (p50, p99) in µs.
async fn round_trip(api: &dyn SyncApi, calls: usize) -> Result<(f64, f64)> {
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for _ in 0..calls {
        let t = Instant::now();
        let page = api.pull(PullRequest { cursor: None, limit: Some(1) }).await?;
        h.record(t.elapsed().as_micros().max(1) as u64)?;
        ensure!(page.changes.len() == 1, "the feed held no change to pull");
    }
    Ok((h.value_at_quantile(0.5) as f64, h.value_at_quantile(0.99) as f64))
}

/// Device A writes `ops` records and pushes them; a fresh device B pulls them; per transport.
async fn end_to_end(server: &RunningServer, dir: &std::path::Path, ops: usize, transports: &[Transport]) -> Result<()> {
    println!("\nEnd to end: {ops} ops written on device A, pushed, pulled by a fresh device B:");
    // The write leg commits one transaction per write; what a bare SQLite transaction writing
    // the same rows reaches here is its ceiling.
    let with = local::raw_baseline(&dir.join("e2e-raw.db"), ops as u64, true, false)?;
    let without = local::raw_baseline(&dir.join("e2e-raw-off.db"), ops as u64, false, false)?;
    println!(
        "  the write leg's ceiling here, a raw rusqlite transaction per write (same rows): {:.0} ops/s with SQLite's \
         checkpoints, {:.0} ops/s with none at all",
        with.rate(),
        without.rate()
    );
    let mut figures = Vec::new();
    for (&transport, batch_size) in transports.iter().flat_map(|t| [(t, 50), (t, 500)]) {
        let url = server.url_of(transport);
        let tenant = format!("e2e-{transport}-{batch_size}");
        let api_a = Arc::new(offline::Counted::over(offline::connect(&url, &tenant)?));
        let api_b = offline::connect(&url, &tenant)?;
        let cfg = EngineConfig { batch_size, pull_limit: 1000, ..EngineConfig::default() };
        let a = Engine::builder(Box::new(SqliteStore::open(dir.join(format!("a-{tenant}.db")))?))
            .api(api_a.clone())
            .config(cfg)
            .build()?;
        let b = Engine::builder(Box::new(SqliteStore::open(dir.join(format!("b-{tenant}.db")))?))
            .api(api_b)
            .config(cfg)
            .build()?;
        let t = Instant::now();
        for i in 0..ops {
            a.create("notes", fields(i as u64))?;
        }
        let write = t.elapsed();
        let t = Instant::now();
        let pushed = a.sync_once().await?;
        let cycle = t.elapsed();
        // The cycle pushes, then pulls the feed: here, device A's own changes coming back.
        let push = api_a.push_part(t, cycle);
        let own_pull = cycle.saturating_sub(push);
        let t = Instant::now();
        let pulled = b.sync_once().await?;
        let pull = t.elapsed();
        ensure!(pushed.accepted as usize == ops, "device A pushed {} of {}", pushed.accepted, ops);
        ensure!(b.list("notes")?.len() == ops, "device B did not receive every record");
        let rate = |d: Duration| ops as f64 / d.as_secs_f64();
        figures.push((transport, format!("push, batch {batch_size}"), push.as_secs_f64()));
        figures.push((transport, format!("pull, batch {batch_size}"), pull.as_secs_f64()));
        println!(
            "  {transport} batch {batch_size:>3}: write {:>6.2} s ({:>8.0} ops/s)  push {:>6.2} s ({:>8.0} ops/s)  pull {:>6.2} s ({:>8.0} ops/s, {} pages)",
            write.as_secs_f64(),
            rate(write),
            push.as_secs_f64(),
            rate(push),
            pull.as_secs_f64(),
            rate(pull),
            pulled.pages
        );
        let trips = api_a.round_trips();
        println!(
            "             push: {:.2} s in {} round trips (request, server, response), {:.2} s on device A (outbox, acks)",
            trips.as_secs_f64(),
            pushed.batches,
            push.saturating_sub(trips).as_secs_f64()
        );
        println!(
            "             device A's whole cycle {:>6.2} s ({:>8.0} ops/s): the push, then its own {} changes pulled back in {:.2} s",
            cycle.as_secs_f64(),
            rate(cycle),
            pushed.pulled,
            own_pull.as_secs_f64()
        );
    }
    transport_ratios("time (below 1: gRPC faster)", figures);
    println!(
        "  for scale: a CouchDB-style peer (PouchDB through express-pouchdb) does about 1,800-2,000 docs/s per leg here"
    );
    Ok(())
}

pub(crate) async fn run(args: BenchArgs) -> Result<()> {
    let wants = |leg: Leg| args.only.is_empty() || args.only.contains(&leg);
    let dir = tempfile::tempdir()?;
    println!("converge bench");
    if cfg!(debug_assertions) {
        println!("(debug build: figures are not representative; use `cargo run --release -p converge-cli -- bench`)");
    }

    if wants(Leg::Local) {
        local::run(dir.path(), args.writes, args.rounds)?;
    }

    let transports: Vec<Transport> = args.transports.iter().map(|&w| w.into()).collect();
    if [Leg::Push, Leg::E2e, Leg::Converge, Leg::Conflict, Leg::Fanout].into_iter().any(wants) {
        let server = start(
            sqlite_store(&dir.path().join("server.db"))?,
            "127.0.0.1:0".parse()?,
            Some("127.0.0.1:0".parse()?),
            DEV_SECRET,
            Rules::default(),
            None,
            Bounds::default(),
        )
        .await?;
        if wants(Leg::Push) {
            println!("\nPush throughput through a real server on loopback ({} ops):", args.ops);
            let (mut figures, mut floors) = (Vec::new(), Vec::new());
            let round_trips = ROUND_TRIPS.min(args.ops.max(1));
            for &transport in &transports {
                let api = offline::connect(&server.url_of(transport), &format!("push-{transport}"))?;
                for batch in [50, 500] {
                    let rate = push_throughput(api.as_ref(), args.ops, batch).await?;
                    println!("  {transport} batch {batch:>3}: {rate:>10.0} ops/s");
                    figures.push((transport, format!("batch {batch}"), rate));
                }
                let (p50, p99) = round_trip(api.as_ref(), round_trips).await?;
                println!("  {transport} request floor, a pull of one change: p50 {p50:.0} µs, p99 {p99:.0} µs");
                floors.push((transport, "p50".to_owned(), p50));
            }
            transport_ratios("ops/s (above 1: gRPC faster)", figures);
            transport_ratios(&format!("request floor over {round_trips} calls (below 1: gRPC faster)"), floors);
        }
        if wants(Leg::E2e) {
            end_to_end(&server, dir.path(), args.ops, &transports).await?;
        }
        if wants(Leg::Converge) {
            live::converge(&server, dir.path(), args.converge_writes, &transports).await?;
        }
        if wants(Leg::Conflict) {
            live::conflict_round(&server, dir.path(), args.conflicts, &transports).await?;
        }
        if wants(Leg::Fanout) {
            live::fanout(&server, dir.path(), args.fanout_devices, args.fanout_writes, &transports).await?;
        }
        server.stop().await?;
    }

    if wants(Leg::Stores) {
        match &args.server {
            Some(url) => stores::run(dir.path(), url, args.ops).await?,
            None if args.only.contains(&Leg::Stores) => {
                anyhow::bail!("the stores leg needs a PostgreSQL database: --server postgres://user:password@host/db")
            }
            None => println!("\nServer stores: skipped (give --server postgres://… to compare SQLite with PostgreSQL)"),
        }
    }

    if wants(Leg::Plugin) {
        #[cfg(feature = "wasm")]
        plugin::run(&args.plugin, args.plugin_calls)?;
        #[cfg(not(feature = "wasm"))]
        println!("\nPlugin call: skipped, this build has no WASM plugin support (feature `wasm`)");
    }
    if wants(Leg::Backlog) {
        offline::backlog(dir.path(), args.backlog, &transports).await?;
    }
    if wants(Leg::FirstSync) {
        offline::first_sync(dir.path(), args.server_records, &transports).await?;
    }
    if (wants(Leg::Backlog) || wants(Leg::FirstSync))
        && let Some(hwm) = memory::status_kib(None, "VmHWM")
    {
        println!(
            "\nThis process's VmHWM over the whole run (all legs; the kernel updates it lazily, so it can trail the samples): {} MiB",
            memory::mib(hwm)
        );
    }
    Ok(())
}
