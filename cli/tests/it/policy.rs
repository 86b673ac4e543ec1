//! `converge policy new` scaffolds a plugin project; `converge policy test` runs a policy against
//! a cases file, exiting 0 when every case passes and 1 with a diff when one does not.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::bin;

fn converge(args: &[&str]) -> Output {
    Command::new(bin()).args(args).env("CONVERGE_LOG", "warn").output().expect("run converge")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[test]
fn policy_new_creates_a_project_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let dir_arg = dir.to_str().unwrap();
    let out = converge(&["policy", "new", "demo-rule", "--dir", dir_arg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("created the policy plugin demo-rule"), "{}", text(&out.stdout));
    let read = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let manifest = read("Cargo.toml");
    assert!(manifest.contains("name = \"demo-rule\"") && manifest.contains("crate-type = [\"cdylib\"]"), "{manifest}");
    let sdk = manifest.lines().find(|l| l.starts_with("converge-plugin-sdk")).expect("the SDK dependency");
    let sdk_path = sdk.split('"').nth(1).unwrap();
    assert!(Path::new(sdk_path).is_absolute() && sdk_path.ends_with("plugins/sdk"), "{sdk}");
    assert!(read("src/lib.rs").contains("export_policy!(DemoRule);"));
    let cases: Value = serde_json::from_str(&read("cases.json")).unwrap();
    assert_eq!(cases["policy"], "demo-rule");
    let readme = read("README.md");
    assert!(readme.contains("cargo build --release --target wasm32-unknown-unknown"), "{readme}");
    assert!(readme.contains("--policy target/wasm32-unknown-unknown/release/demo_rule.wasm --cases cases.json"));
    assert_eq!(read(".gitignore"), "/target\n");

    let before = read("src/lib.rs");
    std::fs::write(dir.join("src/lib.rs"), "// my own work\n").unwrap();
    let again = converge(&["policy", "new", "demo-rule", "--dir", dir_arg]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("is not empty"), "{}", text(&again.stderr));
    assert_eq!(read("src/lib.rs"), "// my own work\n", "nothing was overwritten");
    assert_ne!(before, "// my own work\n");

    let bad = converge(&["policy", "new", "Demo Rule", "--dir", tmp.path().join("bad").to_str().unwrap()]);
    assert!(!bad.status.success() && text(&bad.stderr).contains("is not a plugin name"), "{}", text(&bad.stderr));
    assert!(!tmp.path().join("bad").exists(), "nothing is created for a bad name");
}

#[test]
fn policy_new_writes_into_an_empty_folder_and_prints_json() {
    let tmp = tempfile::tempdir().unwrap();
    let out = converge(&["policy", "new", "empty_ok", "--dir", tmp.path().to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(doc["name"], "empty_ok");
    assert_eq!(doc["files"], json!(["Cargo.toml", "src/lib.rs", "cases.json", "README.md", ".gitignore"]));
    assert!(tmp.path().join("src/lib.rs").is_file());
}

#[test]
fn policy_test_passes_a_builtin_against_its_cases() {
    let cases = fixture("field_merge.cases.json");
    let out = converge(&["policy", "test", "--policy", "field_merge", "--cases", cases.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("both arrival orders checked"), "{stdout}");
    assert!(stdout.contains("PASS    the later edit of a field wins"), "{stdout}");
    assert!(stdout.trim_end().ends_with("3 passed, 0 failed"), "{stdout}");

    let out = converge(&["policy", "test", "--policy", "field_merge", "--cases", cases.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let report: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!((report["passed"].clone(), report["total"].clone()), (json!(true), json!(3)));
    assert_eq!(report["results"][1]["answer"]["fields"], json!({"title": "Food"}));
}

#[test]
fn policy_test_fails_a_wrong_expectation_with_exit_1_and_a_diff() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = tmp.path().join("wrong.json");
    let wrong = json!({"policy": "field_merge", "cases": [
        {"name": "server wins", "base": {"n": 1, "m": 1}, "local": {"n": 2}, "server": {"n": 3, "m": 1},
         "server_meta": {"n": {"version": 2, "hlc": "1700000000009-0000-dev-b"}},
         "expect": {"record": {"n": 2, "m": 1}}}
    ]});
    std::fs::write(&cases, wrong.to_string()).unwrap();
    let out = converge(&["policy", "test", "--policy", "field_merge", "--cases", cases.to_str().unwrap()]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("FAIL    server wins"), "{stdout}");
    assert!(stdout.contains("n: expected 2, got 3"), "{stdout}");
    assert!(stderr.contains("1 of 1 case(s) failed"), "{stderr}");

    let out = converge(&["policy", "test", "--policy", "field_merge", "--cases", cases.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(report["results"][0]["failures"][0]["diff"], json!([{"field": "n", "expected": 2, "got": 3}]));
}

#[test]
fn policy_test_refuses_bad_input_clearly() {
    let cases = fixture("field_merge.cases.json");
    let cases = cases.to_str().unwrap();
    let out = converge(&["policy", "test", "--policy", "merge_fields", "--cases", cases]);
    assert!(text(&out.stderr).contains("unknown policy \"merge_fields\""), "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(1));

    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"policy": "lww", "cases": [{"name": "x", "base": {}, "local": {}, "server": {}, "expect": "take_both"}]}"#,
    )
    .unwrap();
    let out = converge(&["policy", "test", "--policy", "lww", "--cases", bad.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("bad.json: $.cases[0].expect: expected \"take_local\""), "{stderr}");
    assert!(text(&out.stdout).is_empty(), "no table for a file that does not load");
}

/// The repository's root (the guests build into `<root>/target/guests`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the repository").to_path_buf()
}

/// A plugin built from `plugins/guests` by `scripts/build-plugins.sh`.
fn plugin(name: &str) -> PathBuf {
    let path = root().join("target/guests/wasm32-unknown-unknown/release").join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-plugins.sh (the README's test command does)",
        path.display()
    );
    path
}

#[test]
fn policy_test_runs_a_wasm_plugin_and_contains_a_misbehaving_one() {
    let cases = root().join("plugins/guests/examples/inventory/cases.json");
    let inventory = plugin("inventory");
    let out =
        converge(&["policy", "test", "--policy", inventory.to_str().unwrap(), "--cases", cases.to_str().unwrap()]);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("0 failed"), "{}", text(&out.stdout));
    // A plugin that loops forever fails its cases (each left for review), and the run ends.
    let looping = plugin("fixture_loop");
    let out = converge(&["policy", "test", "--policy", looping.to_str().unwrap(), "--cases", cases.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ran out of fuel"), "{}", text(&out.stdout));
}

#[test]
fn a_scaffolded_plugin_builds_and_passes_its_own_cases_as_generated() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shelf-rule");
    let out = converge(&["policy", "new", "shelf-rule", "--dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Built as its README says, into a target folder kept warm between runs.
    let target = root().join("target/scaffold");
    let build = |offline: bool| {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--release", "--target", "wasm32-unknown-unknown"]).current_dir(&dir);
        if offline {
            cmd.arg("--offline");
        }
        cmd.env("CARGO_TARGET_DIR", &target).env_remove("RUSTFLAGS").output().expect("run cargo")
    };
    // The SDK's dependencies are in the local cache after the guests' build; fetch only if not.
    let mut out = build(true);
    if !out.status.success() {
        out = build(false);
    }
    assert!(out.status.success(), "the scaffold did not build: {}", text(&out.stderr));
    let wasm = target.join("wasm32-unknown-unknown/release/shelf_rule.wasm");
    let cases = dir.join("cases.json");
    let out = converge(&["policy", "test", "--policy", wasm.to_str().unwrap(), "--cases", cases.to_str().unwrap()]);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("4 passed, 0 failed"), "{}", text(&out.stdout));
    // Its entity is its name's, unless --entity says another; registering it for another entity
    // warns.
    assert!(std::fs::read_to_string(&cases).unwrap().contains(r#""entity": "shelf_rule""#));
    let db = tmp.path().join("device.db");
    let status = |entity: &str| {
        let policy = format!("{entity}={}", wasm.display());
        converge(&["client", "--db", db.to_str().unwrap(), "--policy", &policy, "status"])
    };
    let mine = status("shelf_rule");
    assert!(mine.status.success() && !text(&mine.stderr).contains("warning"), "{}", text(&mine.stderr));
    let other = status("notes");
    assert!(other.status.success(), "{}", text(&other.stderr));
    assert!(text(&other.stderr).contains("says it is for shelf_rule, not notes"), "{}", text(&other.stderr));
}
