//! Runs the example as `cargo run` would and checks that every edit arrived (the example exits
//! non-zero if one takes over 10 s) and that it printed each timing and the median.

use std::process::Command;

#[test]
fn every_edit_arrives_through_a_notice() {
    let out = Command::new(env!("CARGO_BIN_EXE_converge-example-live-sync")).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the example failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    assert!(stdout.contains("polling off, subscribed to change notices"), "{stdout}");
    for i in 1..=7 {
        let line = stdout.lines().find(|l| l.starts_with(&format!("edit {i}: "))).expect("a line per edit");
        assert!(line.ends_with(" ms"), "{line}");
    }
    assert!(stdout.contains("median: ") && stdout.contains(" ms over 7 edits"), "{stdout}");
    assert!(stdout.contains(r#"converged: both devices show {"title":"edit 7"}"#), "{stdout}");
}
