//! Runs the example as `cargo run` would and checks that the app converged over both wires.

use std::process::Command;

#[test]
fn the_app_converges_over_http_and_over_grpc() {
    let out = Command::new(env!("CARGO_BIN_EXE_converge-example-swap-transport")).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the example failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    let http = stdout.find("== syncing over http (http://127.0.0.1:").expect("a run over HTTP");
    let grpc = stdout.find("== syncing over grpc (grpc://127.0.0.1:").expect("a run over gRPC");
    assert!(http < grpc, "HTTP first, then gRPC:\n{stdout}");
    assert!(stdout[http..grpc].contains("converged: phone and laptop hold the same 3 notes"), "{stdout}");
    // The devices on gRPC also pulled the HTTP run's notes: one store behind both wires.
    assert!(stdout[grpc..].contains("converged: phone and laptop hold the same 6 notes"), "{stdout}");
}
