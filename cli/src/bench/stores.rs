//! The server-store legs of `converge bench --server postgres://…`: pushes and an end-to-end run
//! through real servers on loopback, on SQLite and on PostgreSQL (one node, then two nodes on the
//! same database), beside PostgreSQL's own simple-update rate (pgbench) on that database as the
//! floor, with the CPU the nodes and PostgreSQL spent per op.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use converge_core::check::Rules;
use converge_core::{Engine, EngineConfig};
use converge_server::{PgOptions, PgServerStore};
use converge_sqlite::SqliteStore;
use uuid::Uuid;

use super::{fields, offline, push_throughput};
use crate::serve::{Bounds, DEV_SECRET, RunningServer, redact, sqlite_store, start};

/// Concurrent clients (each on a tenant of its own) in the concurrent push leg.
const CLIENTS: usize = 8;

/// Seconds pgbench runs.
const PGBENCH_SECONDS: u32 = 4;

/// The figures of one store configuration.
struct Figures {
    name: &'static str,
    one_client: f64,
    concurrent: f64,
    push_s: f64,
    pull_s: f64,
    node_us: f64,
    pg_us: Option<f64>,
}

pub(super) async fn run(dir: &Path, url: &str, ops: usize) -> Result<()> {
    println!(
        "\nServer stores: SQLite against PostgreSQL ({}), through real servers on loopback over HTTP:",
        redact(url)
    );
    let floor = pgbench(url).await;
    match &floor {
        Ok((one, tps)) => println!(
            "  floor: pgbench simple-update on the same database, {PGBENCH_SECONDS} s each: 1 client {one:.0} transactions/s \
             ({:.2} ms each), {CLIENTS} clients {tps:.0} transactions/s",
            1000.0 / one
        ),
        Err(e) => println!("  floor: pgbench could not run ({e:#}); ratios to it are left out"),
    }
    let run_id = Uuid::now_v7().simple().to_string();
    let mut all = Vec::new();
    let sqlite = vec![node(sqlite_store(&dir.join("stores-server.db"))?).await?];
    all.push(measure("SQLite, 1 node", &sqlite, dir, ops, &run_id).await?);
    stop(sqlite).await?;
    let pg = PgOptions::default();
    let one = vec![node(Arc::new(PgServerStore::connect(url, &pg).await?)).await?];
    all.push(measure("PostgreSQL, 1 node", &one, dir, ops, &run_id).await?);
    stop(one).await?;
    // Where the single client's time goes: the same node with commits that do not wait for the
    // WAL to reach the disk (SQLite's server store syncs at checkpoints, not per commit).
    let no_sync = PgOptions { settings: vec![("synchronous_commit".into(), "off".into())], ..PgOptions::default() };
    let unsynced = vec![node(Arc::new(PgServerStore::connect(url, &no_sync).await?)).await?];
    all.push(measure("PostgreSQL, 1 node, commits not synced", &unsynced, dir, ops, &run_id).await?);
    stop(unsynced).await?;
    let two = vec![
        node(Arc::new(PgServerStore::connect(url, &pg).await?)).await?,
        node(Arc::new(PgServerStore::connect(url, &pg).await?)).await?,
    ];
    all.push(measure("PostgreSQL, 2 nodes", &two, dir, ops, &run_id).await?);
    stop(two).await?;

    println!(
        "  {:<40} {:>14} {:>16} {:>10} {:>10} {:>12} {:>12}",
        "store",
        "1 client ops/s",
        format!("{CLIENTS} clients ops/s"),
        "e2e push",
        "e2e pull",
        "node µs/op",
        "PG µs/op"
    );
    for f in &all {
        let pg_us = f.pg_us.map_or("n/a".to_owned(), |us| format!("{us:.1}"));
        println!(
            "  {:<40} {:>14.0} {:>16.0} {:>8.2} s {:>8.2} s {:>12.1} {:>12}",
            f.name, f.one_client, f.concurrent, f.push_s, f.pull_s, f.node_us, pg_us
        );
    }
    let base = &all[0];
    for f in &all[1..] {
        println!(
            "  {} / SQLite: 1 client ×{:.2}, {CLIENTS} clients ×{:.2}, e2e push time ×{:.2}, pull time ×{:.2}",
            f.name,
            f.one_client / base.one_client,
            f.concurrent / base.concurrent,
            f.push_s / base.push_s,
            f.pull_s / base.pull_s
        );
    }
    if let Ok((_, tps)) = floor {
        for f in &all[1..] {
            // A push of 50 ops is one PostgreSQL transaction, as a pgbench simple-update is; it
            // writes about 102 rows (50 records, 50 op results, the key, the counter) where
            // pgbench writes 2 (an update and an insert).
            let pushes = f.concurrent / 50.0;
            println!(
                "  {}: {pushes:.0} pushes/s of 50 ops = ×{:.2} pgbench's transactions/s; {:.0} rows written/s = ×{:.1} pgbench's",
                f.name,
                pushes / tps,
                pushes * 102.0,
                pushes * 102.0 / (tps * 2.0)
            );
        }
    }
    Ok(())
}

async fn node(store: Arc<dyn converge_core::server_store::ServerStore>) -> Result<RunningServer> {
    start(store, "127.0.0.1:0".parse()?, None, DEV_SECRET, Rules::default(), None, Bounds::default()).await
}

async fn stop(nodes: Vec<RunningServer>) -> Result<()> {
    for n in nodes {
        n.stop().await?;
    }
    Ok(())
}

async fn measure(name: &'static str, nodes: &[RunningServer], dir: &Path, ops: usize, run_id: &str) -> Result<Figures> {
    let store_name: String = name.chars().filter(char::is_ascii_alphanumeric).collect();
    let tenant = |what: &str| format!("bench-{run_id}-{store_name}-{what}");
    // A short warm-up on every node (connections, prepared statements, the first pages).
    for (i, n) in nodes.iter().enumerate() {
        push_throughput(offline::connect(&n.url(), &tenant(&format!("warm{i}")))?.as_ref(), 1000, 50).await?;
    }
    // One client, batches of 50, one after another: latency-bound.
    let api = offline::connect(&nodes[0].url(), &tenant("one"))?;
    let one_client = push_throughput(api.as_ref(), ops, 50).await?;
    // Concurrent clients on tenants of their own, spread over the nodes.
    let cpu = Cpu::now();
    let started = Instant::now();
    let per_client = ops / CLIENTS;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let api = offline::connect(&nodes[c % nodes.len()].url(), &tenant(&format!("c{c}")))?;
        tasks.push(tokio::spawn(async move { push_throughput(api.as_ref(), per_client, 50).await }));
    }
    for t in tasks {
        t.await??;
    }
    let concurrent = (per_client * CLIENTS) as f64 / started.elapsed().as_secs_f64();
    let spent = cpu.since();
    let n = (per_client * CLIENTS) as f64;
    // End to end: device A pushes through the first node, a fresh device B pulls through the last.
    let t = tenant("e2e");
    let cfg = EngineConfig { batch_size: 500, pull_limit: 1000, ..EngineConfig::default() };
    let a = Engine::builder(Box::new(SqliteStore::open(dir.join(format!("stores-a-{store_name}.db")))?))
        .api(offline::connect(&nodes[0].url(), &t)?)
        .config(cfg)
        .build()?;
    let b = Engine::builder(Box::new(SqliteStore::open(dir.join(format!("stores-b-{store_name}.db")))?))
        .api(offline::connect(&nodes[nodes.len() - 1].url(), &t)?)
        .config(cfg)
        .build()?;
    for i in 0..ops {
        a.create("notes", fields(i as u64))?;
    }
    let clock = Instant::now();
    let pushed = a.sync_once().await?;
    let push_s = clock.elapsed().as_secs_f64();
    let clock = Instant::now();
    b.sync_once().await?;
    let pull_s = clock.elapsed().as_secs_f64();
    ensure!(
        pushed.accepted as usize == ops && b.list("notes")?.len() == ops,
        "{name}: the end-to-end leg lost records"
    );
    println!(
        "  {name}: 1 client {one_client:.0} ops/s; {CLIENTS} clients {concurrent:.0} ops/s; e2e push {push_s:.2} s, pull {pull_s:.2} s"
    );
    Ok(Figures {
        name,
        one_client,
        concurrent,
        push_s,
        pull_s,
        node_us: spent.node.as_secs_f64() * 1e6 / n,
        pg_us: spent.postgres.map(|d| d.as_secs_f64() * 1e6 / n),
    })
}

/// pgbench's simple-update rate on the database at `url` with one client and with [`CLIENTS`]
/// (its tables made, then dropped).
async fn pgbench(url: &str) -> Result<(f64, f64)> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || {
        let run = |args: &[&str]| -> Result<String> {
            let out = std::process::Command::new("pgbench")
                .args(args)
                .output()
                .context("cannot run pgbench (install postgresql-client or postgresql)")?;
            if !out.status.success() {
                bail!("pgbench {}: {}", args.first().unwrap_or(&""), String::from_utf8_lossy(&out.stderr).trim());
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        run(&["-i", "-q", "-s", "8", &url])?;
        let seconds = PGBENCH_SECONDS.to_string();
        let tps = |clients: usize| -> Result<f64> {
            let clients = clients.to_string();
            let out = run(&["-n", "-b", "simple-update", "-c", &clients, "-j", "2", "-T", &seconds, &url])?;
            out.lines()
                .find_map(|l| l.strip_prefix("tps = "))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<f64>().ok())
                .context("pgbench printed no tps")
        };
        let measured = tps(1).and_then(|one| Ok((one, tps(CLIENTS)?)));
        let _ = run(&["-i", "-I", "d", &url]);
        measured
    })
    .await?
}

/// CPU time of this process (the nodes run in it) and of the PostgreSQL processes on this machine.
struct Cpu {
    node: Duration,
    postgres: Option<Duration>,
}

impl Cpu {
    fn now() -> Cpu {
        Cpu { node: proc_cpu("/proc/self/stat").unwrap_or_default(), postgres: postgres_cpu() }
    }

    fn since(&self) -> Cpu {
        let now = Cpu::now();
        Cpu {
            node: now.node.saturating_sub(self.node),
            postgres: now.postgres.zip(self.postgres).map(|(a, b)| a.saturating_sub(b)),
        }
    }
}

/// utime + stime of one /proc stat file.
fn proc_cpu(path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The summed CPU time of every `postgres` process, if any runs here.
fn postgres_cpu() -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else { continue };
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "postgres"
            && let Some(t) = proc_cpu(&format!("/proc/{pid}/stat"))
        {
            total += t;
            found = true;
        }
    }
    found.then_some(total)
}
