//! The records' counters (outbox ops, held ops, open conflicts) and the status counts against a
//! recount of the rows they count, after every step of random writes, syncs through faults,
//! conflicts, resolutions, held ops retried or discarded, and restarts.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use converge_core::wire::Limits;
use converge_core::{Choice, Engine, EngineConfig, Scope, Tenancy};
use converge_server::{SqliteServerStore, SyncService};
use converge_sqlite::SqliteStore;
use proptest::prelude::*;
use serde_json::json;

use crate::faults::Faulty;

#[derive(Debug, Clone)]
enum Step {
    /// Device, record, value size (large ones are refused as too large: held for action).
    Put(usize, u8, usize),
    Patch(usize, u8, u8),
    Delete(usize, u8),
    /// Device, fault: 0 none, 1 request lost, 2 response lost, 3 server error, 4 pull lost.
    Sync(usize, u8),
    /// Device, which open conflict, keep local or accept the server.
    Resolve(usize, u8, bool),
    /// Device, which held op, retry or discard.
    Held(usize, u8, bool),
    Restart(usize),
}

fn step() -> impl Strategy<Value = Step> {
    let d = 0..2usize;
    prop_oneof![
        4 => (d.clone(), 0..4u8, prop_oneof![9 => Just(10usize), 1 => Just(400usize)]).prop_map(|(d, r, n)| Step::Put(d, r, n)),
        3 => (d.clone(), 0..4u8, 0..3u8).prop_map(|(d, r, f)| Step::Patch(d, r, f)),
        1 => (d.clone(), 0..4u8).prop_map(|(d, r)| Step::Delete(d, r)),
        4 => (d.clone(), 0..5u8).prop_map(|(d, f)| Step::Sync(d, f)),
        2 => (d.clone(), 0..3u8, any::<bool>()).prop_map(|(d, i, k)| Step::Resolve(d, i, k)),
        1 => (d.clone(), 0..3u8, any::<bool>()).prop_map(|(d, i, r)| Step::Held(d, i, r)),
        1 => d.prop_map(Step::Restart),
    ]
}

struct Device {
    path: std::path::PathBuf,
    api: Arc<Faulty>,
    engine: Engine,
}

fn open(path: &Path, api: Arc<Faulty>) -> Engine {
    let config = EngineConfig { max_attempts: 2, ..EngineConfig::default() };
    Engine::builder(Box::new(SqliteStore::open(path).unwrap())).api(api).config(config).build().unwrap()
}

/// Compares every record's counters and the status with a recount of the rows.
fn recount(d: &Device) -> Result<(), String> {
    let conn = rusqlite::Connection::open(&d.path).map_err(|e| e.to_string())?;
    let mut stmt = conn
        .prepare(
            "SELECT r.entity || '/' || r.record_id, r.pending, r.failed, r.conflicts, \
             (SELECT COUNT(*) FROM outbox o WHERE o.entity = r.entity AND o.record_id = r.record_id), \
             (SELECT COUNT(*) FROM outbox o WHERE o.entity = r.entity AND o.record_id = r.record_id \
              AND o.state IN ('dead_letter', 'needs_action')), \
             (SELECT COUNT(*) FROM conflicts c WHERE c.entity = r.entity AND c.record_id = r.record_id \
              AND c.outcome = 'open') FROM records r",
        )
        .map_err(|e| e.to_string())?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                [r.get::<_, i64>(1)?, r.get(2)?, r.get(3)?],
                [r.get::<_, i64>(4)?, r.get(5)?, r.get(6)?],
            ))
        })
        .map_err(|e| e.to_string())?;
    for row in rows {
        let (key, stored, counted) = row.map_err(|e| e.to_string())?;
        if stored != counted {
            return Err(format!("{key}: pending/failed/conflicts stored {stored:?}, counted {counted:?}"));
        }
    }
    let orphans: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM outbox o WHERE NOT EXISTS \
             (SELECT 1 FROM records r WHERE r.entity = o.entity AND r.record_id = o.record_id)",
            [],
            |r| r.get(0),
        )
        .map_err(|e| e.to_string())?;
    if orphans != 0 {
        return Err(format!("{orphans} outbox ops without their record"));
    }
    let counted: (i64, i64, i64, i64) = conn
        .query_row(
            "SELECT (SELECT COUNT(*) FROM outbox WHERE state NOT IN ('dead_letter', 'needs_action')), \
             (SELECT COUNT(*) FROM outbox WHERE state = 'needs_action'), \
             (SELECT COUNT(*) FROM outbox WHERE state = 'dead_letter'), \
             (SELECT COUNT(*) FROM conflicts WHERE outcome = 'open')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .map_err(|e| e.to_string())?;
    let s = d.engine.status();
    let shown = (s.pending as i64, s.needs_action as i64, s.dead_letters as i64, s.open_conflicts as i64);
    if shown != counted {
        return Err(format!("status pending/needs action/dead/conflicts {shown:?}, counted {counted:?}"));
    }
    Ok(())
}

async fn run(steps: Vec<Step>) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteServerStore::open(&dir.path().join("server.db")).unwrap();
    let service = SyncService::new(Arc::new(store), Limits { max_record_bytes: 300, ..Limits::default() });
    let api = service.scoped(Scope::new("acme", "u"));
    let mut devices: Vec<Device> = (0..2)
        .map(|i| {
            let path = dir.path().join(format!("d{i}.db"));
            let api = Faulty::new(api.clone());
            Device { engine: open(&path, api.clone()), path, api }
        })
        .collect();
    for (n, s) in steps.iter().enumerate() {
        let d = match s {
            Step::Put(d, ..)
            | Step::Patch(d, ..)
            | Step::Delete(d, _)
            | Step::Sync(d, _)
            | Step::Resolve(d, ..)
            | Step::Held(d, ..)
            | Step::Restart(d) => *d,
        };
        let dev = &mut devices[d];
        let e = dev.engine.clone();
        // Refusals of the user's input (a deleted record, a missing one) are fine here; only
        // the counters are checked.
        match s {
            Step::Put(_, r, n) => drop(e.put("notes", &format!("r{r}"), obj(json!({"a": "x".repeat(*n), "b": n})))),
            Step::Patch(_, r, f) => drop(e.patch("notes", &format!("r{r}"), obj(json!({ format!("f{f}"): n })))),
            Step::Delete(_, r) => drop(e.delete("notes", &format!("r{r}"))),
            Step::Sync(_, fault) => {
                match fault {
                    1 => dev.api.drop_requests.store(1, Ordering::SeqCst),
                    2 => dev.api.drop_responses.store(1, Ordering::SeqCst),
                    3 => dev.api.server_errors.store(1, Ordering::SeqCst),
                    4 => dev.api.drop_pulls.store(1, Ordering::SeqCst),
                    _ => {}
                }
                let _ = e.sync_once().await;
                for c in [&dev.api.drop_requests, &dev.api.drop_responses, &dev.api.server_errors, &dev.api.drop_pulls]
                {
                    c.store(0, Ordering::SeqCst);
                }
            }
            Step::Resolve(_, i, keep) => {
                let open = e.conflicts().unwrap();
                if let Some(c) = open.get(*i as usize % open.len().max(1)) {
                    let choice = if *keep && !c.server_deleted { Choice::KeepLocal } else { Choice::AcceptServer };
                    // Keeping local edits of a record deleted since is refused; the rest must work.
                    match e.resolve(c.id, choice) {
                        Err(err) if err.class() != converge_core::ErrorClass::Rejected => {
                            return Err(format!("step {n}: resolve failed: {err}"));
                        }
                        _ => {}
                    }
                }
            }
            Step::Held(_, i, retry) => {
                let held = e.held_ops().unwrap();
                if let Some(op) = held.get(*i as usize % held.len().max(1)) {
                    let r = if *retry { e.retry_op(op.op_id) } else { e.discard_op(op.op_id) };
                    r.map_err(|err| format!("step {n}: held op: {err}"))?;
                }
            }
            Step::Restart(_) => {
                drop(e);
                dev.engine = open(&dev.path, dev.api.clone());
            }
        }
        recount(dev).map_err(|err| format!("after step {n} ({s:?}) on d{d}: {err}"))?;
    }
    Ok(())
}

fn obj(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    converge_test_support::obj(v)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn counters_match_a_recount_of_their_rows_after_every_step(steps in prop::collection::vec(step(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        if let Err(e) = rt.block_on(run(steps)) {
            return Err(TestCaseError::fail(e));
        }
    }
}
