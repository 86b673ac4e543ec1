//! Runs the example as `cargo run` would and checks that every conflict settled as its policy
//! must settle it. Needs the WASM plugins built first (`./scripts/build-plugins.sh`, which
//! `./scripts/test.sh` runs before the tests).

use std::process::Command;

#[test]
fn each_policy_settles_its_conflict() {
    let out = Command::new(env!("CARGO_BIN_EXE_converge-example-custom-policies")).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the example failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    for line in [
        r#"settled        {"body":"oat milk\neggs\nbread\nsalted butter","title":"groceries"}"#,
        "policy field_merge answers merged",
        r#"settled        {"best":120,"player":"alice"}"#,
        "policy keep_best answers take_local",
        r#"settled        {"qty":5,"sku":"bolt-m6"}"#,
        "policy inventory answers merged",
        "all three conflicts settled",
    ] {
        assert!(stdout.contains(line), "the output lacks {line:?}:\n{stdout}");
    }
}
