//! One seeded run: random writes, syncs, faults, offline periods and restarts on N devices; then
//! a quiet phase without faults; then the convergence and no-loss checks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use converge_core::check::Rules;
use converge_core::wire::Limits;
use converge_core::{CheckMode, Choice, Fields, PullRequest, Scope, SyncApi, Tenancy};
use converge_server::{SqliteServerStore, SyncService};
use serde_json::{Value, json};

use crate::net::{FaultCounts, Link, Rates};
use crate::rng::{Rng, TraceHash};
use crate::world::{Device, ENTITIES, SeededIds, SimClock};
use crate::{Outcome, SimConfig};

/// One local field write, for the no-loss check. A text edit that changed one line is checked
/// by that line, since a line merge keeps the line but not the whole text.
pub(crate) struct Write {
    pub(crate) step: usize,
    pub(crate) entity: &'static str,
    pub(crate) id: String,
    pub(crate) field: String,
    pub(crate) value: Value,
}

/// The line of `new` that differs from `old`, when exactly one does.
fn changed_line(old: Option<&Value>, new: &Value) -> Option<String> {
    let (old, new) = (old?.as_str()?, new.as_str()?);
    let mut changed = old.lines().zip(new.lines()).filter(|(a, b)| a != b).map(|(_, b)| b.to_owned());
    let line = changed.next()?;
    changed.next().is_none().then_some(line)
}

struct Run {
    verbose: bool,
    rng: Rng,
    trace: TraceHash,
    base: Arc<AtomicU64>,
    devices: Vec<Device>,
    writes: Vec<Write>,
    deletes: Vec<(usize, &'static str, String)>,
    failures: Vec<String>,
    ops: u64,
    cursors: Vec<u64>,
}

const RECORDS: u64 = 4;

fn lines(rng: &mut Rng) -> String {
    (0..3).map(|i| format!("line {i} v{}", rng.below(5))).collect::<Vec<_>>().join("\n")
}

fn value_for(rng: &mut Rng, entity: &str, field: &str, old: Option<&Value>) -> Value {
    match (entity, field) {
        ("notes", "body") => {
            // Change one line of the current text, so concurrent edits can merge line by line.
            let text = old.and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| lines(rng));
            let mut ls: Vec<String> = text.lines().map(str::to_owned).collect();
            if ls.is_empty() {
                ls.push(String::new());
            }
            let i = rng.below(ls.len() as u64) as usize;
            ls[i] = format!("line {i} v{}", rng.below(1000));
            json!(ls.join("\n"))
        }
        ("notes", _) => json!(format!("title {}", rng.below(1000))),
        ("flags", "done") => json!(rng.chance(0.5)),
        ("flags", _) => json!(*rng.pick(&["red", "green", "blue", "amber"])),
        ("orders", "qty") => json!(rng.below(20)),
        _ => json!(*rng.pick(&["new", "paid", "shipped", "cancelled"])),
    }
}

fn fields_of(entity: &str) -> &'static [&'static str] {
    match entity {
        "notes" => &["title", "body"],
        "flags" => &["done", "color"],
        _ => &["status", "qty"],
    }
}

impl Run {
    fn event(&mut self, e: String) {
        if self.verbose {
            eprintln!("{e}");
        }
        self.trace.add(&e);
    }

    fn fail(&mut self, what: String) {
        self.failures.push(what);
    }

    async fn write(&mut self, step: usize, d: usize) {
        let (entity, _) = *self.rng.pick(&ENTITIES);
        let id = format!("r{}", self.rng.below(RECORDS));
        let engine = self.devices[d].engine().clone();
        let current = engine.get(entity, &id).expect("read");
        let name = self.devices[d].name.clone();
        let result = match current {
            Some(r) if r.deleted => return,
            None => {
                let mut f = Fields::new();
                for field in fields_of(entity) {
                    f.insert((*field).to_owned(), value_for(&mut self.rng, entity, field, None));
                }
                self.log_fields(step, entity, &id, &f);
                engine.put(entity, &id, f.clone()).map(|v| (Some(f), v))
            }
            Some(r) if self.rng.chance(0.1) => {
                self.deletes.push((step, entity, id.clone()));
                engine.delete(entity, &id).map(|()| (None, r))
            }
            Some(r) => {
                let mut patch = Fields::new();
                for field in fields_of(entity) {
                    if patch.is_empty() || self.rng.chance(0.3) {
                        let v = value_for(&mut self.rng, entity, field, r.fields.get(*field));
                        patch.insert((*field).to_owned(), v);
                    }
                }
                // A value equal to what the device shows changes nothing: it is not a write.
                let changed: Fields = patch
                    .iter()
                    .filter(|(k, v)| r.fields.get(*k) != Some(*v))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let logged: Fields = changed
                    .iter()
                    .map(|(k, v)| {
                        let line = changed_line(r.fields.get(k), v).map(|l| json!({ "line": l }));
                        (k.clone(), line.unwrap_or_else(|| v.clone()))
                    })
                    .collect();
                self.log_fields(step, entity, &id, &logged);
                engine.patch(entity, &id, patch.clone()).map(|v| (Some(patch), v))
            }
        };
        self.ops += 1;
        match result {
            Ok((patch, _)) => {
                // Reads see the device's own writes at once.
                let seen = engine.get(entity, &id).expect("read back");
                let ok = match (&patch, &seen) {
                    (None, s) => s.as_ref().is_none_or(|v| v.deleted),
                    (Some(p), Some(v)) => p.iter().all(|(k, val)| v.fields.get(k) == Some(val)),
                    (Some(_), None) => false,
                };
                if !ok {
                    self.fail(format!("step {step}: {name} does not read its own write on {entity}/{id}"));
                }
                self.event(format!(
                    "{step} {name} write {entity}/{id} {}",
                    patch.map(|p| Value::Object(p).to_string()).unwrap_or("delete".into())
                ));
            }
            Err(e) => self.fail(format!("step {step}: {name} local write on {entity}/{id} failed: {e}")),
        }
    }

    fn log_fields(&mut self, step: usize, entity: &'static str, id: &str, f: &Fields) {
        for (k, v) in f {
            self.writes.push(Write { step, entity, id: id.to_owned(), field: k.clone(), value: v.clone() });
        }
    }

    async fn sync(&mut self, step: usize, d: usize) -> bool {
        let engine = self.devices[d].engine().clone();
        let name = self.devices[d].name.clone();
        let result = engine.sync_once().await;
        let text = match &result {
            Ok(r) => format!("ok b{} a{} c{} r{} p{}", r.batches, r.accepted, r.conflicts, r.rejected, r.pulled),
            Err(e) => format!("err {:?}", e.class()),
        };
        // The cursor never moves backwards.
        let cursor = engine
            .sync_cursor()
            .expect("cursor")
            .and_then(|c| c.trim_start_matches('c').parse::<u64>().ok())
            .unwrap_or(0);
        if cursor < self.cursors[d] {
            self.fail(format!("step {step}: {name}'s cursor went back from {} to {cursor}", self.cursors[d]));
        }
        self.cursors[d] = cursor;
        self.event(format!("{step} {name} sync {text}"));
        matches!(&result, Ok(r) if r.batches == 0 && r.pulled == 0)
    }

    async fn resolve(&mut self, step: usize, d: usize) {
        let engine = self.devices[d].engine().clone();
        let open = engine.conflicts().expect("conflicts");
        if open.is_empty() {
            return;
        }
        let c = &open[self.rng.below(open.len() as u64) as usize];
        let choice = if self.rng.chance(0.5) || c.server_deleted { Choice::AcceptServer } else { Choice::KeepLocal };
        let r = engine.resolve(c.id, choice.clone());
        self.event(format!(
            "{step} {} resolve {}/{} {:?} {}",
            self.devices[d].name,
            c.entity,
            c.record_id,
            choice,
            r.is_ok()
        ));
    }
}

/// Runs one seed.
pub(crate) fn run(seed: u64, config: &SimConfig) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    rt.block_on(run_async(seed, config))
}

async fn run_async(seed: u64, config: &SimConfig) -> Outcome {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut rng = Rng::new(seed);
    let rates = Rates {
        drop_request: rng.unit() * 0.3,
        drop_response: rng.unit() * 0.3,
        duplicate: rng.unit() * 0.5,
        delay: rng.unit() * 0.2,
        server_error: rng.unit() * 0.1,
    };
    let store = SqliteServerStore::open(&dir.path().join("server.db")).expect("server store");
    let mut rules = Rules::with_limits(Limits::default());
    rules.pins.insert("orders".into(), CheckMode::Record);
    let service = SyncService::with_rules(Arc::new(store.clone()), rules);
    let api = service.scoped(Scope::new("sim", "u"));
    let base = Arc::new(AtomicU64::new(1_764_064_800_000));
    let mut devices = Vec::new();
    for i in 0..config.devices {
        let name = format!("d{i}");
        let skew = rng.below(600_001) as i64 - 300_000;
        let link = Arc::new(Link::new(api.clone(), rates, rng.fork()));
        let clock = Arc::new(SimClock::new(base.clone(), skew));
        let ids = Arc::new(SeededIds::new(rng.fork()));
        devices.push(Device::new(&name, dir.path(), link, clock, ids));
    }
    let mut run = Run {
        verbose: std::env::var_os("CONVERGE_SIM_TRACE").is_some(),
        rng,
        trace: TraceHash::default(),
        base,
        cursors: vec![0; devices.len()],
        devices,
        writes: Vec::new(),
        deletes: Vec::new(),
        failures: Vec::new(),
        ops: 0,
    };
    run.event(format!("seed {seed} rates {rates:?}"));
    let mut restarts = 0;
    for step in 0..config.steps {
        let dt = 1 + run.rng.below(2000);
        run.base.fetch_add(dt, Ordering::SeqCst);
        let d = run.rng.below(run.devices.len() as u64) as usize;
        let roll = run.rng.below(100);
        match roll {
            0..=39 => run.write(step, d).await,
            40..=69 => {
                run.sync(step, d).await;
            }
            70..=74 => {
                let link = run.devices[d].link.clone();
                link.set_offline(!link.is_offline());
                run.event(format!("{step} d{d} offline={}", link.is_offline()));
            }
            75..=79 => {
                run.devices[d].restart();
                restarts += 1;
                run.event(format!("{step} d{d} restart"));
            }
            80..=89 => {
                let link = run.devices[d].link.clone();
                if let Some(e) = link.deliver_one().await {
                    run.event(format!("{step} d{d} {e}"));
                }
            }
            _ => run.resolve(step, d).await,
        }
    }

    // Quiet: no more faults; late requests arrive; everyone syncs until nothing moves.
    for d in &run.devices {
        d.link.calm();
    }
    for i in 0..run.devices.len() {
        let link = run.devices[i].link.clone();
        while let Some(e) = link.deliver_one().await {
            run.event(format!("quiet d{i} {e}"));
        }
    }
    let mut quiet = false;
    for round in 0..12 {
        let mut all_quiet = true;
        for d in 0..run.devices.len() {
            all_quiet &= run.sync(config.steps + round, d).await;
        }
        if all_quiet {
            quiet = true;
            break;
        }
    }
    if !quiet {
        run.fail("the devices did not go quiet within 12 rounds of fault-free syncs".into());
    }
    crate::check::at_quiescence(&mut run_view(&mut run), &api, &store).await;
    let mut faults = FaultCounts::default();
    for d in &run.devices {
        let c = d.link.counts();
        faults.dropped_requests += c.dropped_requests;
        faults.dropped_responses += c.dropped_responses;
        faults.duplicates += c.duplicates;
        faults.delayed += c.delayed;
        faults.offline_refusals += c.offline_refusals;
        faults.server_errors += c.server_errors;
    }
    let mut conflicts_by_policy = BTreeMap::new();
    for d in &run.devices {
        let e = d.engine();
        for c in e.journal().expect("journal").into_iter().chain(e.conflicts().expect("conflicts")) {
            *conflicts_by_policy.entry(c.policy.clone()).or_insert(0u64) += 1;
        }
    }
    Outcome {
        seed,
        trace_hash: run.trace.value(),
        ops: run.ops,
        conflicts_by_policy,
        faults,
        restarts,
        failures: std::mem::take(&mut run.failures),
    }
}

/// What the checks need of a run.
pub(crate) struct View<'a> {
    pub(crate) devices: &'a [Device],
    pub(crate) writes: &'a [Write],
    pub(crate) deletes: &'a [(usize, &'static str, String)],
    pub(crate) failures: &'a mut Vec<String>,
    pub(crate) trace: &'a mut TraceHash,
}

fn run_view(run: &mut Run) -> View<'_> {
    View {
        devices: &run.devices,
        writes: &run.writes,
        deletes: &run.deletes,
        failures: &mut run.failures,
        trace: &mut run.trace,
    }
}

/// Reads the whole feed from the start in small pages.
pub(crate) async fn full_feed(api: &Arc<dyn SyncApi>) -> converge_core::Result<Vec<converge_core::Change>> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = api.pull(PullRequest { cursor: cursor.clone(), limit: Some(3) }).await?;
        out.extend(page.changes);
        cursor = Some(page.cursor);
        if !page.has_more {
            return Ok(out);
        }
    }
}
