//! `converge bench` long-offline legs at smoke sizes: the run succeeds and prints its figures.

use converge_test_support::converge_status;

use crate::bin;

#[test]
fn backlog_and_first_sync_legs_run_at_small_sizes_and_print_their_figures() {
    let args = ["bench", "--only", "backlog,first-sync", "--backlog", "2000", "--server-records", "5000"];
    let (ok, out, err) = converge_status(bin(), &args).unwrap();
    assert!(ok, "bench failed: {err}\n{out}");
    for expected in [
        "batch  50: write offline (Engine::put)",
        "batch  50: drain (sync_once)",
        "batch 500: drain (sync_once)",
        "seed: HTTP push",
        "first sync: pull page  500 (engine default)",
        "first sync: pull page 1000 (server maximum)",
        "server process peak RSS (VmHWM)",
        "backlog: 2000 ops drained",
        "first-sync: 5000 records pulled",
        "counts match",
    ] {
        assert!(out.contains(expected), "no {expected:?} in the output:\n{out}");
    }
    assert!(out.matches(" ops/s").count() >= 4, "{out}");
    assert!(out.matches(" records/s").count() >= 3, "{out}");
    if cfg!(target_os = "linux") {
        assert_eq!(out.matches("RSS MiB: start ").count(), 6, "{out}");
    }
    assert!(!out.contains("local write latency") && !out.contains("Push throughput"), "{out}");
}

#[test]
fn the_plugin_leg_compares_a_wasm_plugin_with_a_closure() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let plugin = root.join("target/guests/wasm32-unknown-unknown/release/inventory.wasm");
    assert!(plugin.exists(), "{} is missing: run scripts/build-plugins.sh", plugin.display());
    let args = ["bench", "--only", "plugin", "--plugin-calls", "200", "--plugin", plugin.to_str().unwrap()];
    let (ok, out, err) = converge_status(bin(), &args).unwrap();
    assert!(ok, "bench failed: {err}\n{out}");
    for expected in ["Rust closure (policy_fn), baseline", "WASM plugin (fresh sandboxed instance per call)", "again"] {
        assert!(out.contains(expected), "no {expected:?} in the output:\n{out}");
    }
}
