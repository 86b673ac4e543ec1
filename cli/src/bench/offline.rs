//! The long-offline legs of `converge bench`: a backlog written offline and drained in bounded
//! batches, and a fresh device's first sync of a large feed. Each runs against a `converge serve`
//! child process on loopback, with this process's RSS sampled as the leg runs.

use std::path::Path;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use async_trait::async_trait;
use converge_connect::Transport;
use converge_core::wire::PULL_LIMIT_MAX;
use converge_core::{
    Change, Engine, EngineConfig, Hlc, Mutation, Op, PullRequest, PullResponse, PushBatch, PushRequest, PushResponse,
    RecordState, SyncApi,
};
use converge_server::JwtAuth;
use converge_sqlite::SqliteStore;
use uuid::Uuid;

use super::fields;
use super::memory::{Sampler, Trace, mib};
use super::server_process::ServerProcess;
use crate::serve::DEV_SECRET;

const ENTITY: &str = "notes";
/// Records compared one by one with the server after each leg.
const CHECKS: usize = 16;
/// Mutations per seeding push (the server's largest batch).
const SEED_BATCH: u64 = 500;
/// Concurrent seeding tasks.
const SEED_TASKS: u64 = 4;

fn record_id(i: u64) -> String {
    format!("n{i:08}")
}

fn token(tenant: &str) -> Result<String> {
    Ok(JwtAuth::new(DEV_SECRET.as_bytes()).issue(tenant, "bench", Duration::from_secs(24 * 3600))?)
}

/// A client of either transport for `tenant`.
pub(super) fn connect(url: &str, tenant: &str) -> Result<Arc<dyn SyncApi>> {
    Ok(converge_connect::connect(url, Arc::new(converge_core::StaticToken(token(tenant)?)))?)
}

/// One figures row: `label  n unit  seconds  rate unit/s  extra`.
fn row(label: &str, n: u64, unit: &str, d: Duration, extra: &str) {
    let rate = n as f64 / d.as_secs_f64();
    let line = format!("  {label:<44} {n:>9} {unit:<7} {:>8.2} s {rate:>10.0} {unit}/s  {extra}", d.as_secs_f64());
    println!("{}", line.trim_end());
}

fn rss_row(trace: &Trace) {
    println!("      {}", trace.line());
}

/// `k` record indexes below `n`: the first, the last, and random ones between.
fn picks(n: u64, k: usize) -> Vec<u64> {
    let mut s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    let mut out = vec![0, n.saturating_sub(1)];
    while out.len() < k.min(n as usize) {
        // SplitMix64.
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.push((z ^ (z >> 31)) % n);
    }
    out
}

/// Compares a few records of the device with the server's: same version, same fields, synced.
async fn check_records(engine: &Engine, api: &dyn SyncApi, n: u64) -> Result<usize> {
    let picked = picks(n, CHECKS);
    for &i in &picked {
        let id = record_id(i);
        let server = api.record(ENTITY, &id).await.with_context(|| format!("record #{i} on the server"))?;
        let local = engine.get(ENTITY, &id)?.with_context(|| format!("record #{i} is missing on the device"))?;
        ensure!(
            server.version == local.version && server.fields == local.fields && !server.deleted && !local.deleted,
            "record #{i} differs between the device and the server"
        );
        ensure!(local.state == RecordState::Synced, "record #{i} is not synced on the device");
        ensure!(local.fields == fields(i), "record #{i} does not hold what was written");
    }
    Ok(picked.len())
}

/// The backlog leg: `n` ops written offline, then drained with `sync_once` at batch 50 (the
/// engine's default) and 500 (the server's largest), each into its own tenant.
pub(super) async fn backlog(dir: &Path, n: u64, transports: &[Transport]) -> Result<()> {
    ensure!(n > 0, "--backlog must be at least 1");
    println!(
        "\nLong offline: {n} ops written offline through Engine::put, then drained by sync_once to a \
         `converge serve` child process on loopback:"
    );
    let server = ServerProcess::spawn(&dir.join("backlog-server.db"))?;
    let mut drains = Vec::new();
    let mut checked = 0;
    for (&transport, batch_size) in transports.iter().flat_map(|t| [(t, EngineConfig::default().batch_size), (t, 500)])
    {
        let path = dir.join(format!("backlog-{transport}-{batch_size}.db"));

        // Offline: an engine without a sync API, closed afterwards as an app would be.
        let written = Arc::new(AtomicU64::new(0));
        let progress = Arc::clone(&written);
        let sampler = Sampler::start(n, move || progress.load(Ordering::Relaxed));
        let t = Instant::now();
        let engine = Engine::builder(Box::new(SqliteStore::open(&path)?)).build()?;
        for i in 0..n {
            engine.put(ENTITY, &record_id(i), fields(i))?;
            written.store(i + 1, Ordering::Relaxed);
        }
        let write = t.elapsed();
        let on_disk = disk(&path);
        drop(engine);
        let trace = sampler.finish();
        row(&format!("{transport} batch {batch_size:>3}: write offline (Engine::put)"), n, "ops", write, &on_disk);
        rss_row(&trace);

        // Back online: reopen the store with a client and drain it in one sync cycle.
        let api = Arc::new(Counted::new(server.url_of(transport), &format!("backlog-{transport}-{batch_size}"))?);
        let engine = Engine::builder(Box::new(SqliteStore::open(&path)?))
            .api(api.clone())
            .config(EngineConfig { batch_size, ..EngineConfig::default() })
            .build()?;
        ensure!(engine.status().pending == n, "the reopened store has {} pending ops", engine.status().pending);
        let watched = engine.clone();
        let sampler = Sampler::start(n, move || n.saturating_sub(watched.status().pending));
        let t = Instant::now();
        let report = engine.sync_once().await?;
        let drain = t.elapsed();
        let trace = sampler.finish();
        let push = api.push_part(t, drain);
        row(
            &format!("{transport} batch {batch_size:>3}: drain (sync_once)"),
            n,
            "ops",
            drain,
            &format!(
                "{} batches: push {:.2} s, then pull of its own {} changes {:.2} s ({} pages); {}",
                report.batches,
                push.as_secs_f64(),
                report.pulled,
                drain.saturating_sub(push).as_secs_f64(),
                report.pages,
                disk(&path)
            ),
        );
        rss_row(&trace);
        ensure!(report.accepted == n, "the server accepted {} of {n} ops", report.accepted);
        let status = engine.status();
        ensure!(
            status.pending == 0 && status.needs_action + status.dead_letters == 0,
            "ops left in the outbox after the drain"
        );
        checked = check_records(&engine, api.as_ref(), n).await?;
        drains.push((transport, batch_size, drain, trace));
    }
    let server_peak = server.peak_rss_kib();
    server.stop()?;
    if let Some(kib) = server_peak {
        println!("  server process peak RSS (VmHWM): {} MiB", mib(kib));
    }
    let mut summary = format!("backlog: {n} ops drained");
    for (transport, batch, d, trace) in &drains {
        summary.push_str(&format!(
            "; {transport} batch {batch}: {:.2} s, {:.0} ops/s, RSS peak {} MiB (+{:.1} over its start)",
            d.as_secs_f64(),
            n as f64 / d.as_secs_f64(),
            mib(trace.peak),
            trace.growth_mib()
        ));
    }
    println!("  {summary}; {checked} records checked against the server");
    super::transport_ratios(
        "drain time (below 1: gRPC faster)",
        drains.iter().map(|(t, b, d, _)| (*t, format!("batch {b}"), d.as_secs_f64())),
    );
    Ok(())
}

/// A client that counts the changes it has pulled (for progress) and notes when the first pull
/// went out (where a cycle's push part ends).
pub(super) struct Counted {
    inner: Arc<dyn SyncApi>,
    pulled: AtomicU64,
    first_pull: OnceLock<Instant>,
    /// Nanoseconds spent waiting on pushes (request, server, response).
    pushing: AtomicU64,
}

impl Counted {
    fn new(url: &str, tenant: &str) -> Result<Counted> {
        Ok(Counted::over(connect(url, tenant)?))
    }

    pub(super) fn over(inner: Arc<dyn SyncApi>) -> Counted {
        Counted { inner, pulled: AtomicU64::new(0), first_pull: OnceLock::new(), pushing: AtomicU64::new(0) }
    }

    /// How long the pushes' round trips took in all: the rest of a push part is the device's own
    /// work (taking each batch from the outbox, persisting its acks).
    pub(super) fn round_trips(&self) -> Duration {
        Duration::from_nanos(self.pushing.load(Ordering::Relaxed))
    }

    /// How long after `start` the first pull went out: a cycle's push part (the whole of
    /// `total` if it never pulled).
    pub(super) fn push_part(&self, start: Instant, total: Duration) -> Duration {
        self.first_pull.get().map_or(total, |at| at.duration_since(start))
    }
}

#[async_trait]
impl SyncApi for Counted {
    async fn push(&self, req: PushRequest) -> converge_core::Result<PushResponse> {
        let t = Instant::now();
        let resp = self.inner.push(req).await;
        self.pushing.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        resp
    }
    async fn pull(&self, req: PullRequest) -> converge_core::Result<PullResponse> {
        self.first_pull.get_or_init(Instant::now);
        let page = self.inner.pull(req).await?;
        self.pulled.fetch_add(page.changes.len() as u64, Ordering::Relaxed);
        Ok(page)
    }
    async fn record(&self, entity: &str, record_id: &str) -> converge_core::Result<Change> {
        self.inner.record(entity, record_id).await
    }

    async fn subscribe(&self, cursor: Option<String>) -> converge_core::Result<converge_core::Subscription> {
        self.inner.subscribe(cursor).await
    }
}

/// The size of a store file and of its WAL, for the figures rows.
fn disk(path: &Path) -> String {
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len()) / 1024;
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    format!("store {} MiB + WAL {} MiB", mib(size(path)), mib(size(Path::new(&wal))))
}

/// Creates records `0..m` through the real push, from several tasks at once.
async fn seed(api: Arc<dyn SyncApi>, m: u64) -> Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..SEED_TASKS {
        let (api, next) = (Arc::clone(&api), Arc::clone(&next));
        tasks.spawn(async move {
            let device = format!("seed-{task}");
            loop {
                let from = next.fetch_add(SEED_BATCH, Ordering::Relaxed);
                if from >= m {
                    return anyhow::Ok(());
                }
                let to = (from + SEED_BATCH).min(m);
                let mutations: Vec<Mutation> = (from..to)
                    .map(|i| Mutation {
                        op_id: Uuid::now_v7(),
                        entity: ENTITY.into(),
                        record_id: record_id(i),
                        op: Op::Create,
                        base_version: 0,
                        patch: fields(i),
                        hlc: Hlc { millis: 1_764_064_800_000 + i, counter: 0, device: device.clone() },
                        check: Default::default(),
                    })
                    .collect();
                let req = PushRequest {
                    idempotency_key: Uuid::now_v7().to_string(),
                    batch: PushBatch { device_id: device.clone(), mutations },
                };
                let resp = api.push(req).await?;
                ensure!(resp.accepted.len() as u64 == to - from, "the server did not accept every seeded record");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// Records of `entity` a device store holds (not deleted), counted in SQL rather than listed,
/// so the check does not load them all.
fn count_records(path: &Path) -> Result<u64> {
    let conn = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let n: i64 =
        conn.query_row("SELECT COUNT(*) FROM records WHERE entity = ?1 AND deleted = 0", [ENTITY], |r| r.get(0))?;
    Ok(n as u64)
}

/// The first-sync leg: a server seeded with `m` records, then a fresh device pulls the whole feed
/// with `sync_once`, at the engine's default page size and at the server's largest.
pub(super) async fn first_sync(dir: &Path, m: u64, transports: &[Transport]) -> Result<()> {
    ensure!(m > 0, "--server-records must be at least 1");
    println!(
        "\nFirst sync: a fresh device pulls a feed of {m} records from a `converge serve` child process on loopback:"
    );
    let server = ServerProcess::spawn(&dir.join("feed-server.db"))?;
    let api = connect(&server.url, "feed")?;
    let t = Instant::now();
    seed(Arc::clone(&api), m).await?;
    let seeding = t.elapsed();
    row(&format!("seed: HTTP push, batch {SEED_BATCH}, {SEED_TASKS} tasks"), m, "records", seeding, "(side figure)");

    let default_page = EngineConfig::default().pull_limit;
    let mut pulls = Vec::new();
    let mut checked = 0;
    let legs =
        transports.iter().flat_map(|&t| [(t, default_page, "engine default"), (t, PULL_LIMIT_MAX, "server maximum")]);
    for (transport, pull_limit, what) in legs {
        let path = dir.join(format!("fresh-{transport}-{pull_limit}.db"));
        let counted = Arc::new(Counted::new(server.url_of(transport), "feed")?);
        let engine = Engine::builder(Box::new(SqliteStore::open(&path)?))
            .api(counted.clone())
            .config(EngineConfig { pull_limit, ..EngineConfig::default() })
            .build()?;
        let progress = Arc::clone(&counted);
        let sampler = Sampler::start(m, move || progress.pulled.load(Ordering::Relaxed));
        let t = Instant::now();
        let report = engine.sync_once().await?;
        let pull = t.elapsed();
        let trace = sampler.finish();
        row(
            &format!("{transport} first sync: pull page {pull_limit:>4} ({what})"),
            m,
            "records",
            pull,
            &format!("{} pages; {}", report.pages, disk(&path)),
        );
        rss_row(&trace);
        ensure!(report.pulled == m, "the device pulled {} of {m} records", report.pulled);
        let held = count_records(&path)?;
        ensure!(held == m, "the device holds {held} of {m} records");
        checked = check_records(&engine, api.as_ref(), m).await?;
        pulls.push((transport, pull_limit, pull, trace));
    }
    let server_peak = server.peak_rss_kib();
    server.stop()?;
    if let Some(kib) = server_peak {
        println!("  server process peak RSS (VmHWM): {} MiB", mib(kib));
    }
    let mut summary = format!("first-sync: {m} records pulled");
    for (transport, page, d, trace) in &pulls {
        summary.push_str(&format!(
            "; {transport} page {page}: {:.2} s, {:.0} records/s, RSS peak {} MiB (+{:.1} over its start)",
            d.as_secs_f64(),
            m as f64 / d.as_secs_f64(),
            mib(trace.peak),
            trace.growth_mib()
        ));
    }
    println!("  {summary}; counts match, {checked} records checked against the server");
    super::transport_ratios(
        "first-sync time (below 1: gRPC faster)",
        pulls.iter().map(|(t, p, d, _)| (*t, format!("page {p}"), d.as_secs_f64())),
    );
    Ok(())
}
