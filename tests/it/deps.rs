//! converge-core stays pure: no network, SQL driver or wasm runtime in its dependency tree; nor
//! does the policy test harness, which plugin repositories depend on. Leaf crates do not depend
//! on each other (the two SQLite stores share only converge-sqlite-support, which depends on no
//! converge crate); wasmtime stays in converge-wasm (and the CLI's `wasm` feature); tonic stays
//! in converge-grpc and the crates that compose transports.

use std::collections::{HashMap, HashSet, VecDeque};
use std::process::Command;

use serde_json::Value;

const FORBIDDEN: &[&str] = &[
    "reqwest",
    "axum",
    "hyper",
    "tonic",
    "rusqlite",
    "libsqlite3-sys",
    "sqlx",
    "tokio-postgres",
    "postgres",
    "wasmtime",
];

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--all-features"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("metadata JSON")
}

/// Names of every package reachable from `root` through normal (non-dev, non-build) edges.
fn normal_tree(meta: &Value, root: &str) -> HashSet<String> {
    let names: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: HashMap<&str, &Value> =
        meta["resolve"]["nodes"].as_array().unwrap().iter().map(|n| (n["id"].as_str().unwrap(), n)).collect();
    let start = names.iter().find(|(_, n)| **n == root).map(|(id, _)| *id).expect("root package");
    let mut seen = HashSet::new();
    let mut queue = VecDeque::from([start]);
    while let Some(id) = queue.pop_front() {
        if !seen.insert(id) {
            continue;
        }
        for dep in nodes[id]["deps"].as_array().unwrap() {
            let normal = dep["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"].is_null());
            if normal {
                queue.push_back(dep["pkg"].as_str().unwrap());
            }
        }
    }
    seen.into_iter().map(|id| names[id].to_owned()).collect()
}

#[test]
fn core_has_no_network_sql_or_wasm_in_its_tree() {
    let meta = metadata();
    let tree = normal_tree(&meta, "converge-core");
    assert!(tree.contains("serde_json"), "the walk must see core's real dependencies: {tree:?}");
    let leaks: Vec<&&str> = FORBIDDEN.iter().filter(|f| tree.contains(**f)).collect();
    assert!(leaks.is_empty(), "converge-core pulls in {leaks:?}");
}

#[test]
fn the_policy_test_harness_has_no_runtime_network_or_sql_in_its_tree() {
    let meta = metadata();
    let tree = normal_tree(&meta, "converge-policy-test");
    assert!(tree.contains("converge-core"), "the walk must see the harness's real dependencies: {tree:?}");
    let leaks: Vec<&&str> = FORBIDDEN.iter().filter(|f| tree.contains(**f)).collect();
    assert!(leaks.is_empty(), "converge-policy-test pulls in {leaks:?}");
    assert!(!tree.contains("converge-policies"), "built-ins are a dev-dependency only");
}

#[test]
fn the_check_sees_a_leak_where_there_is_one() {
    let meta = metadata();
    let tree = normal_tree(&meta, "converge-sqlite");
    assert!(tree.contains("rusqlite"), "the walk must find rusqlite under converge-sqlite");
}

#[test]
fn the_sqlite_support_crate_depends_on_no_converge_crate_and_only_the_stores_use_it() {
    let meta = metadata();
    let tree = normal_tree(&meta, "converge-sqlite-support");
    assert!(tree.contains("rusqlite"), "the walk must see the support crate's real dependencies: {tree:?}");
    let converge: Vec<&String> =
        tree.iter().filter(|n| n.starts_with("converge-") && *n != "converge-sqlite-support").collect();
    assert!(converge.is_empty(), "converge-sqlite-support depends on {converge:?}");
    for user in ["converge-sqlite", "converge-server"] {
        assert!(normal_tree(&meta, user).contains("converge-sqlite-support"), "{user} no longer uses it");
    }
    for other in ["converge-core", "converge-http", "converge-wasm", "converge-policies"] {
        assert!(!normal_tree(&meta, other).contains("converge-sqlite-support"), "{other} pulls in SQLite plumbing");
    }
}

#[test]
fn leaf_crates_do_not_depend_on_each_other() {
    let meta = metadata();
    let leaves = ["converge-sqlite", "converge-server", "converge-http", "converge-grpc", "converge-wasm"];
    for leaf in leaves {
        let tree = normal_tree(&meta, leaf);
        for other in leaves.iter().filter(|o| **o != leaf) {
            assert!(!tree.contains(*other), "{leaf} depends on {other}");
        }
    }
}

#[test]
fn tonic_is_only_in_the_grpc_transport_and_what_composes_transports() {
    let meta = metadata();
    let composers = ["converge-grpc", "converge-connect", "converge-cli", "converge-ffi"];
    // The examples are apps: like the CLI, they open servers through converge-connect.
    for member in
        workspace_members(&meta).iter().filter(|m| !composers.contains(m) && !m.starts_with("converge-example-"))
    {
        assert!(!normal_tree(&meta, member).contains("tonic"), "{member} pulls in tonic");
    }
    let tree = normal_tree(&meta, "converge-grpc");
    assert!(tree.contains("tonic"), "the walk must find tonic under converge-grpc");
    assert!(!tree.contains("protoc-bin-vendored"), "no protoc at build time");
    let ours: Vec<&String> = tree
        .iter()
        .filter(|p| p.starts_with("converge-") && *p != "converge-grpc" && *p != "converge-net-support")
        .collect();
    assert_eq!(ours, ["converge-core"], "converge-grpc depends only on converge-core (and the net support crate)");
}

#[test]
fn the_net_support_crate_depends_on_no_converge_crate_and_only_the_server_transports_use_it() {
    let meta = metadata();
    let tree = normal_tree(&meta, "converge-net-support");
    assert!(tree.contains("tokio"), "the walk must see the support crate's real dependencies: {tree:?}");
    let converge: Vec<&String> =
        tree.iter().filter(|n| n.starts_with("converge-") && *n != "converge-net-support").collect();
    assert!(converge.is_empty(), "converge-net-support depends on {converge:?}");
    for user in ["converge-http", "converge-grpc"] {
        assert!(normal_tree(&meta, user).contains("converge-net-support"), "{user} no longer uses it");
    }
    for other in ["converge-core", "converge-server", "converge-sqlite", "converge-wasm"] {
        assert!(!normal_tree(&meta, other).contains("converge-net-support"), "{other} pulls in the net plumbing");
    }
}

#[test]
fn uniffi_is_only_in_the_ffi_library_and_its_binding_generator() {
    let meta = metadata();
    let ffi = ["converge-ffi", "converge-uniffi-bindgen"];
    for member in workspace_members(&meta).iter().filter(|m| !ffi.contains(m)) {
        assert!(!normal_tree(&meta, member).contains("uniffi"), "{member} pulls in uniffi");
    }
    assert!(normal_tree(&meta, "converge-ffi").contains("uniffi"), "the walk must find uniffi under converge-ffi");
    // Nothing depends on the FFI library (building it links a large cdylib).
    for member in workspace_members(&meta).iter().filter(|m| **m != "converge-ffi") {
        assert!(!normal_tree(&meta, member).contains("converge-ffi"), "{member} depends on converge-ffi");
    }
}

fn workspace_members(meta: &Value) -> Vec<&str> {
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| meta["workspace_members"].as_array().unwrap().contains(&p["id"]))
        .map(|p| p["name"].as_str().unwrap())
        .collect()
}

#[test]
fn wasmtime_is_only_in_converge_wasm_which_needs_only_core() {
    let meta = metadata();
    let members = workspace_members(&meta);
    assert!(members.contains(&"converge-wasm") && members.contains(&"converge-plugin-sdk"), "{members:?}");
    // The custom-policies example loads a plugin, as an app does.
    let hosts = ["converge-wasm", "converge-cli", "converge-ffi", "converge-example-custom-policies"];
    for member in members.iter().filter(|m| !hosts.contains(m)) {
        assert!(!normal_tree(&meta, member).contains("wasmtime"), "{member} pulls in wasmtime");
    }
    // The command line and the FFI library have it only through their `wasm` feature.
    for name in ["converge-cli", "converge-ffi"] {
        let host = meta["packages"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap();
        let dep = host["dependencies"].as_array().unwrap().iter().find(|d| d["name"] == "converge-wasm");
        assert_eq!(dep.map(|d| d["optional"].clone()), Some(Value::Bool(true)), "converge-wasm is optional in {name}");
        assert_eq!(host["features"]["wasm"], serde_json::json!(["dep:converge-wasm"]));
    }
    let tree = normal_tree(&meta, "converge-wasm");
    assert!(tree.contains("wasmtime"), "the walk must find wasmtime under converge-wasm");
    let ours: Vec<&String> = tree.iter().filter(|p| p.starts_with("converge-") && *p != "converge-wasm").collect();
    assert_eq!(ours, ["converge-core"], "converge-wasm depends only on converge-core");
    assert!(
        !normal_tree(&meta, "converge-plugin-sdk")
            .iter()
            .any(|p| p.starts_with("converge-") && p != "converge-plugin-sdk")
    );
}
