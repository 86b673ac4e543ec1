//! The live legs of `converge bench`, per transport: time to converge (a write on A until B
//! holds it, both with running workers), a conflict round (records edited offline on two devices,
//! every conflict settled by the entity's policy and journaled), and fan-out (one writer, many
//! subscribed devices, until all hold a write).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use converge_connect::Transport;
use converge_core::{Engine, Fields, Notices, WorkerConfig};
use converge_server::notices::COALESCE;
use converge_sqlite::SqliteStore;
use hdrhistogram::Histogram;
use serde_json::json;

use super::offline::connect;
use super::transport_ratios;
use crate::serve::RunningServer;

/// A worker that never polls: a change can only arrive through a notice.
const LIVE: WorkerConfig = WorkerConfig {
    debounce: Duration::ZERO,
    backoff_base: Duration::from_millis(100),
    backoff_cap: Duration::from_secs(2),
    poll_every: None,
    poll_while_live: false,
};
/// How long one write may take to arrive before the leg fails.
const ARRIVAL_LIMIT: Duration = Duration::from_secs(30);

fn device(dir: &Path, url: &str, tenant: &str, name: &str) -> Result<Engine> {
    let store = SqliteStore::open(dir.join(format!("{tenant}-{name}.db")))?;
    Ok(Engine::builder(Box::new(store)).api(connect(url, tenant)?).build()?)
}

fn value(i: usize) -> Fields {
    json!({"title": format!("edit {i}"), "i": i}).as_object().cloned().unwrap_or_default()
}

fn holds(engine: &Engine, id: &str, i: usize) -> bool {
    engine.get("notes", id).ok().flatten().is_some_and(|r| r.fields.get("i") == Some(&json!(i)))
}

/// Waits until `engine` holds write `i` of record `id`, woken by its status changes.
async fn arrival(engine: &Engine, id: &str, i: usize) -> Result<()> {
    let mut status = engine.watch_status();
    let deadline = tokio::time::Instant::now() + ARRIVAL_LIMIT;
    while !holds(engine, id, i) {
        tokio::time::timeout_at(deadline, status.changed())
            .await
            .with_context(|| format!("write {i} did not arrive within {ARRIVAL_LIMIT:?}"))??;
    }
    Ok(())
}

async fn until_live(engines: &[Engine]) -> Result<()> {
    let deadline = Instant::now() + ARRIVAL_LIMIT;
    while engines.iter().any(|e| e.status().notices != Notices::Live) {
        ensure!(Instant::now() < deadline, "devices did not subscribe within {ARRIVAL_LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Time to converge: devices A and B with running workers that never poll; A writes, and the
/// clock stops when B's store holds the write. `writes` times, one after the other.
pub(super) async fn converge(
    server: &RunningServer,
    dir: &Path,
    writes: usize,
    transports: &[Transport],
) -> Result<()> {
    ensure!(writes > 0, "--converge-writes must be at least 1");
    println!(
        "\nTime to converge: {writes} writes on device A, {} ms apart, each timed until device B's store holds it (workers running, no polling):",
        COALESCE.as_millis()
    );
    let mut figures = Vec::new();
    for &transport in transports {
        let url = server.url_of(transport);
        let tenant = format!("converge-{transport}");
        let (a, b) = (device(dir, &url, &tenant, "a")?, device(dir, &url, &tenant, "b")?);
        let (wa, wb) = (a.start_worker(LIVE)?, b.start_worker(LIVE)?);
        until_live(&[a.clone(), b.clone()]).await?;
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        for i in 0..writes {
            // One write per notice window: a write inside the window of the last notice waits
            // out the rest of it, by design (a burst costs one pull).
            tokio::time::sleep(COALESCE).await;
            let t = Instant::now();
            a.put("notes", "n1", value(i))?;
            arrival(&b, "n1", i).await?;
            h.record(t.elapsed().as_micros().max(1) as u64)?;
        }
        wa.stop().await;
        wb.stop().await;
        println!(
            "  {transport}: p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms  (target: p50 <= 25 ms, p99 <= 100 ms)",
            ms(&h, 0.5),
            ms(&h, 0.99),
            h.max() as f64 / 1000.0
        );
        figures.push((transport, "p50".to_owned(), ms(&h, 0.5)));
        figures.push((transport, "p99".to_owned(), ms(&h, 0.99)));
    }
    transport_ratios("time (below 1: gRPC faster)", figures);
    println!(
        "  for scale: polling every 60 s averages 30 s; ElectricSQL publishes 6 ms from a Postgres write to a client"
    );
    Ok(())
}

/// A conflict round: `n` records created on A and synced to B; both edit the same field of
/// every record offline; A syncs, B syncs (every conflict settled by the field merge and
/// journaled, the winners pushed), A syncs again. Timed from A's first sync to both equal.
pub(super) async fn conflict_round(
    server: &RunningServer,
    dir: &Path,
    n: usize,
    transports: &[Transport],
) -> Result<()> {
    ensure!(n > 0, "--conflicts must be at least 1");
    println!(
        "\nConflict round: {n} records edited offline on two devices (same field), both sync, the policy settles each:"
    );
    let mut figures = Vec::new();
    for &transport in transports {
        let url = server.url_of(transport);
        let tenant = format!("conflict-{transport}");
        let open = |name: &str| -> Result<Engine> {
            let store = SqliteStore::open(dir.join(format!("{tenant}-{name}.db")))?;
            Ok(Engine::builder(Box::new(store))
                .api(connect(&url, &tenant)?)
                .policy("notes", Arc::new(converge_policies::FieldMerge))
                .build()?)
        };
        let (a, b) = (open("a")?, open("b")?);
        let ids: Vec<String> = (0..n).map(|i| format!("r{i:05}")).collect();
        for (i, id) in ids.iter().enumerate() {
            a.put("notes", id, value(i))?;
        }
        a.sync_once().await?;
        b.sync_once().await?;
        // B edits after A, so by their clocks B's edit wins each field merge: every round
        // settles the same way, and B pushes every winner.
        let edit =
            |who: &str, i: usize| json!({"title": format!("{who} {i}")}).as_object().cloned().unwrap_or_default();
        for (i, id) in ids.iter().enumerate() {
            a.patch("notes", id, edit("a", i))?;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        for (i, id) in ids.iter().enumerate() {
            b.patch("notes", id, edit("b", i))?;
        }
        let t = Instant::now();
        let first = a.sync_once().await?;
        let second = b.sync_once().await?;
        let third = a.sync_once().await?;
        let took = t.elapsed();
        ensure!(first.accepted as usize == n, "A pushed {} of {n}", first.accepted);
        ensure!(second.conflicts as usize == n, "B met {} conflicts of {n}", second.conflicts);
        ensure!(third.pulled >= second.accepted, "A pulled {} of B's {} winners", third.pulled, second.accepted);
        let journaled = b.journal()?.len();
        ensure!(journaled == n && b.conflicts()?.is_empty(), "{journaled} of {n} conflicts journaled, some left open");
        let (la, lb) = (a.list("notes")?, b.list("notes")?);
        ensure!(la.len() == n && lb.len() == n, "a device lost records");
        for (ra, rb) in la.iter().zip(&lb) {
            ensure!(ra.fields == rb.fields && ra.version == rb.version, "the devices differ on {}", ra.record_id);
        }
        let api = connect(&url, &tenant)?;
        for i in [0, n / 2, n - 1] {
            let on_server = api.record("notes", &ids[i]).await?;
            ensure!(on_server.fields == la[i].fields, "the devices differ from the server on {}", ids[i]);
        }
        println!(
            "  {transport}: {:>6.3} s for the round ({} conflicts settled and journaled, {} winners pushed; target <= 0.3 s)",
            took.as_secs_f64(),
            second.conflicts,
            second.accepted,
        );
        figures.push((transport, "round".to_owned(), took.as_secs_f64()));
    }
    transport_ratios("time (below 1: gRPC faster)", figures);
    println!("  for scale: PouchDB through express-pouchdb takes 4.1-4.5 s here for the same round");
    Ok(())
}

/// Fan-out: `devices` subscribed devices (each its own store and client) with running workers,
/// one writer; each write is timed until every device holds it.
pub(super) async fn fanout(
    server: &RunningServer,
    dir: &Path,
    devices: usize,
    writes: usize,
    transports: &[Transport],
) -> Result<()> {
    ensure!(devices > 0 && writes > 0, "--fanout-devices and --fanout-writes must be at least 1");
    println!(
        "\nFan-out: {devices} subscribed devices in this process, one writer; {writes} writes, {} ms apart, each timed until all hold it:",
        COALESCE.as_millis()
    );
    let mut figures = Vec::new();
    for &transport in transports {
        let url = server.url_of(transport);
        let tenant = format!("fanout-{transport}");
        let writer = device(dir, &url, &tenant, "writer")?;
        let mut readers = Vec::with_capacity(devices);
        let mut workers = Vec::with_capacity(devices);
        for d in 0..devices {
            let e = device(dir, &url, &tenant, &format!("d{d:03}"))?;
            workers.push(e.start_worker(LIVE)?);
            readers.push(e);
        }
        until_live(&readers).await?;
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        for i in 0..writes {
            tokio::time::sleep(COALESCE).await;
            let t = Instant::now();
            writer.put("notes", "n1", value(i))?;
            writer.sync_once().await?;
            let mut all = tokio::task::JoinSet::new();
            for r in &readers {
                let r = r.clone();
                all.spawn(async move { arrival(&r, "n1", i).await });
            }
            while let Some(done) = all.join_next().await {
                done??;
            }
            h.record(t.elapsed().as_micros().max(1) as u64)?;
        }
        for w in workers {
            w.stop().await;
        }
        println!(
            "  {transport}: until all {devices} hold a write: p50 {:>7.2} ms  p99 {:>7.2} ms  (target: p99 <= 500 ms)",
            ms(&h, 0.5),
            ms(&h, 0.99)
        );
        figures.push((transport, "p50".to_owned(), ms(&h, 0.5)));
        figures.push((transport, "p99".to_owned(), ms(&h, 0.99)));
    }
    transport_ratios("time (below 1: gRPC faster)", figures);
    Ok(())
}
