//! The plugin leg: p50 of one `resolve` call of a WASM plugin against the same rule as a Rust
//! closure, measured in the same run, and what loading (compiling) a plugin costs.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use converge_core::{CheckMode, Fields, Hlc, MergeInput, MergePolicy, Resolution};
use serde_json::{Value, json};

use super::local::Lat;

/// The inventory rule as a closure: per count changed on both sides, server + (local − base).
fn inventory_closure() -> std::sync::Arc<dyn MergePolicy> {
    converge_policies::policy_fn("inventory", CheckMode::Record, |input| {
        let mut fields = input.server.clone();
        for (k, local) in input.local {
            let (Some(b), Some(s), Some(l)) = (
                input.base.get(k).and_then(Value::as_i64),
                input.server.get(k).and_then(Value::as_i64),
                local.as_i64(),
            ) else {
                return Resolution::NeedsReview { reason: format!("{k} is not a count on every side") };
            };
            fields.insert(k.clone(), Value::from(s + (l - b)));
        }
        Resolution::Merged { fields, notice: "counts merged".into() }
    })
}

fn obj(v: Value) -> Fields {
    v.as_object().cloned().unwrap_or_default()
}

/// Runs `calls` resolves of each policy, interleaved in rounds, and prints both and the ratio.
pub(super) fn run(plugin: &Path, calls: u64) -> Result<()> {
    println!(
        "\nPlugin call: one `resolve` of the inventory rule, as a WASM plugin and as a Rust closure ({calls} calls each):"
    );
    let t = Instant::now();
    let engine = converge_wasm::PluginEngine::new()?;
    let wasm = engine.load_file(plugin).with_context(|| {
        format!("{}: build the example plugins with scripts/build-plugins.sh, or pass --plugin", plugin.display())
    })?;
    let first_load = t.elapsed();
    let t = Instant::now();
    let _again = engine.load_file(plugin)?;
    let cached_load = t.elapsed();
    ensure!(engine.compiled_count() == 1, "the second load compiled again");
    let closure = inventory_closure();
    let base = obj(json!({"qty": 10, "reserved": 2, "damaged": 0, "name": "bolts"}));
    let local = obj(json!({"qty": 13, "reserved": 3}));
    let server = obj(json!({"qty": 15, "reserved": 2, "damaged": 1, "name": "bolts"}));
    let hlc: Hlc = "1700000000000-0000-dev-a".parse().map_err(|_| anyhow::anyhow!("a bad HLC"))?;
    let meta = BTreeMap::new();
    let conflicting = vec!["qty".to_owned(), "reserved".to_owned()];
    let input = MergeInput {
        entity: "items",
        record_id: "r1",
        base: &base,
        local: &local,
        local_hlc: &hlc,
        server: &server,
        server_meta: &meta,
        server_version: 3,
        server_deleted: false,
        conflicting: &conflicting,
    };
    let (expect_w, expect_c) = (wasm.resolve(&input), closure.resolve(&input));
    let merged = |r: &Resolution| match r {
        Resolution::Merged { fields, .. } => Some(fields.clone()),
        _ => None,
    };
    ensure!(merged(&expect_w).is_some() && merged(&expect_w) == merged(&expect_c), "the two disagree: {expect_w:?}");
    let (mut lw, mut lc) = (Lat::new()?, Lat::new()?);
    let rounds = 4;
    for _ in 0..rounds {
        for _ in 0..calls / rounds {
            let t = Instant::now();
            std::hint::black_box(closure.resolve(std::hint::black_box(&input)));
            lc.record(t.elapsed());
        }
        for _ in 0..calls / rounds {
            let t = Instant::now();
            std::hint::black_box(wasm.resolve(std::hint::black_box(&input)));
            lw.record(t.elapsed());
        }
    }
    lc.row("Rust closure (policy_fn), baseline", None);
    lw.row("WASM plugin (fresh sandboxed instance per call)", Some(&lc));
    println!(
        "  plugin call p50 {:.1} µs vs closure {:.2} µs: ×{:.0}; loading: first {:.1} ms (compile), again {:.2} ms (cache)",
        lw.q(0.5),
        lc.q(0.5),
        lw.q(0.5) / lc.q(0.5),
        first_load.as_secs_f64() * 1000.0,
        cached_load.as_secs_f64() * 1000.0
    );
    Ok(())
}
