//! `converge bench` at smoke sizes: each leg runs over both transports and prints its figures
//! with gRPC's over HTTP's.

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
        "http batch  50: drain",
        "grpc batch 500: drain",
        "grpc first sync: pull page 1000",
        "gRPC / HTTP, drain time",
        "gRPC / HTTP, first-sync time",
    ] {
        assert!(out.contains(expected), "no {expected:?} in the output:\n{out}");
    }
    assert!(out.matches(" ops/s").count() >= 4, "{out}");
    assert!(out.matches(" records/s").count() >= 3, "{out}");
    if cfg!(target_os = "linux") {
        assert_eq!(
            out.matches("RSS MiB: start ").count(),
            12,
            "four offline writes, four drains, four first syncs: {out}"
        );
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

#[test]
fn the_live_legs_run_over_both_transports_and_print_their_figures() {
    let args = [
        "bench",
        "--only",
        "push,e2e,converge,conflict,fanout",
        "--ops",
        "500",
        "--converge-writes",
        "20",
        "--conflicts",
        "50",
        "--fanout-devices",
        "5",
        "--fanout-writes",
        "5",
    ];
    let (ok, out, err) = converge_status(bin(), &args).unwrap();
    assert!(ok, "bench failed: {err}\n{out}");
    for expected in [
        "http batch  50:",
        "grpc batch 500:",
        "gRPC / HTTP, ops/s",
        "grpc request floor, a pull of one change: p50",
        "Time to converge: 20 writes",
        "Conflict round: 50 records",
        "50 conflicts settled and journaled",
        "Fan-out: 5 subscribed devices",
        "until all 5 hold a write",
    ] {
        assert!(out.contains(expected), "no {expected:?} in the output:\n{out}");
    }
    assert_eq!(out.matches("gRPC / HTTP").count(), 6, "a ratio line per leg (push has two): {out}");
}
