//! Misbehaving plugins are contained: each call returns, in bounded time, a needs-review
//! resolution naming the plugin and the fault; nothing panics and the host stays usable.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use converge_core::{Fields, Hlc, MergeInput, MergePolicy, Resolution};
use converge_wasm::{Fault, Limits, PluginEngine, WasmPolicy};
use serde_json::json;

use crate::support::{engine, load};

/// Generous: a contained call takes milliseconds; this only catches a hang.
const BOUND: Duration = Duration::from_secs(10);

fn obj(v: serde_json::Value) -> Fields {
    v.as_object().unwrap().clone()
}

/// Runs `policy` on the inventory conflict (base 10, here 13, server 15) for `entity`.
fn resolve(policy: &WasmPolicy, entity: &str) -> (Resolution, Duration) {
    let (base, local, server) = (obj(json!({"qty": 10})), obj(json!({"qty": 13})), obj(json!({"qty": 15})));
    let hlc: Hlc = "1700000000000-0000-dev-a".parse().unwrap();
    let meta = BTreeMap::new();
    let conflicting = ["qty".to_owned()];
    let input = MergeInput {
        entity,
        record_id: "i1",
        base: &base,
        local: &local,
        local_hlc: &hlc,
        server: &server,
        server_meta: &meta,
        server_version: 2,
        server_deleted: false,
        conflicting: &conflicting,
    };
    let started = Instant::now();
    let resolution = policy.resolve(&input);
    (resolution, started.elapsed())
}

fn assert_good_plugin_still_works(engine: &PluginEngine) {
    let good = load(engine, "inventory");
    let (resolution, _) = resolve(&good, "items");
    assert_eq!(resolution, Resolution::Merged { fields: obj(json!({"qty": 18})), notice: "counts merged: qty".into() });
}

/// Loads `fixture`, resolves with it twice, and checks the reason each time.
fn contained(fixture: &str, name: &str, entity: &str, expected: &str) {
    let engine = engine();
    let bad = load(engine, fixture);
    assert_eq!(bad.name(), name);
    for attempt in 1..=2 {
        let (resolution, took) = resolve(&bad, entity);
        println!("{fixture} ({entity}) attempt {attempt}: contained in {took:?}: {resolution:?}");
        let Resolution::NeedsReview { reason } = resolution else {
            panic!("{fixture}: expected needs-review, got {resolution:?}");
        };
        let names_plugin = format!("plugin {name} (sha256 {})", bad.short_hash());
        assert!(reason.contains(&names_plugin), "{fixture}: the reason names the plugin: {reason}");
        assert!(reason.contains(expected), "{fixture}: the reason says {expected:?}: {reason}");
        assert!(took < BOUND, "{fixture}: took {took:?}");
    }
    assert_good_plugin_still_works(engine);
}

#[test]
fn a_plugin_that_loops_runs_out_of_fuel() {
    contained("fixture_loop", "loop", "items", "ran out of fuel (50000000 units)");
}

#[test]
fn a_plugin_that_allocates_without_bound_hits_the_memory_limit() {
    contained("fixture_alloc", "alloc", "items", "hit the memory limit (16777216 bytes)");
}

#[test]
fn a_plugin_that_panics_traps() {
    contained("fixture_trap", "trap", "items", "trapped: wasm `unreachable` instruction executed");
}

#[test]
fn a_plugin_that_returns_invalid_json_is_malformed() {
    contained("fixture_garbage", "garbage", "items", "returned malformed fields: not JSON");
}

#[test]
fn a_plugin_that_returns_a_json_array_is_malformed() {
    contained("fixture_garbage", "garbage", "array", "returned malformed fields: a JSON array, not an object");
}

#[test]
fn try_resolve_names_each_fault() {
    let engine = engine();
    let input_of = |p: &WasmPolicy| {
        let (base, local, server) = (obj(json!({"qty": 1})), obj(json!({"qty": 2})), obj(json!({"qty": 3})));
        let hlc: Hlc = "1700000000000-0000-dev-a".parse().unwrap();
        p.try_resolve(&MergeInput {
            entity: "items",
            record_id: "i1",
            base: &base,
            local: &local,
            local_hlc: &hlc,
            server: &server,
            server_meta: &BTreeMap::new(),
            server_version: 2,
            server_deleted: false,
            conflicting: &[],
        })
    };
    let limits = Limits::default();
    assert_eq!(input_of(&load(engine, "fixture_loop")), Err(Fault::OutOfFuel { limit: limits.fuel }));
    assert_eq!(input_of(&load(engine, "fixture_alloc")), Err(Fault::MemoryLimit { limit: limits.memory_bytes }));
    assert!(matches!(input_of(&load(engine, "fixture_trap")), Err(Fault::Trapped(_))));
    assert!(matches!(input_of(&load(engine, "fixture_garbage")), Err(Fault::Malformed(_))));
    assert!(matches!(input_of(&load(engine, "inventory")), Ok(Resolution::Merged { .. })));
}

#[test]
fn limits_apply_per_plugin() {
    let engine = engine();
    let starved = load(engine, "inventory").with_limits(Limits { fuel: 1_000, ..Limits::default() });
    let (resolution, _) = resolve(&starved, "items");
    assert!(
        matches!(&resolution, Resolution::NeedsReview { reason } if reason.contains("ran out of fuel (1000 units)"))
    );
    // Less memory than the module starts with: instantiation itself is refused, and contained.
    let cramped = load(engine, "inventory").with_limits(Limits { memory_bytes: 64 << 10, ..Limits::default() });
    let (resolution, _) = resolve(&cramped, "items");
    assert!(matches!(&resolution, Resolution::NeedsReview { reason } if reason.contains("hit the memory limit")));
    assert_good_plugin_still_works(engine);
}

#[test]
fn bad_and_good_plugins_run_side_by_side_on_threads() {
    let engine = engine();
    let (bad, good) = (load(engine, "fixture_loop"), load(engine, "inventory"));
    std::thread::scope(|s| {
        let looping = s.spawn(|| resolve(&bad, "items").0);
        for _ in 0..20 {
            assert!(matches!(resolve(&good, "items").0, Resolution::Merged { .. }));
        }
        assert!(matches!(looping.join().unwrap(), Resolution::NeedsReview { .. }));
    });
}
