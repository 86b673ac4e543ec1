//! Schemathesis, a schema-driven fuzzer from PyPI, against a real `converge serve` with every check
//! on: the OpenAPI document says exactly what the server does. A fixed case count keeps this run
//! short and the same each time (deterministic generation); `scripts/schema-fuzz.sh SECONDS` runs
//! longer, with a new seed.

use std::path::Path;
use std::process::Command;

use serde_json::json;

use crate::idempotency::{batch, mutation, push, uuid};
use crate::server;

/// Cases per operation and phase in the short run (deterministic: the same cases each time).
const EXAMPLES: &str = "60";

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_and_the_server_agree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root");
    let schemathesis = root.join("target/pyenv/bin/schemathesis");
    assert!(
        schemathesis.exists(),
        "{} is missing: run scripts/python-env.sh (the README's test command does)",
        schemathesis.display()
    );
    let srv = server();
    let token = srv.token("fuzz", "schemathesis").unwrap();
    // One change in the feed, so a stream opened at the start has a notice to send right away
    // (the run reads each stream until one event or a second).
    let seed = batch(vec![mutation(&uuid(), "seed", "create", 0, json!({"n": 1}))]);
    assert_eq!(push(&srv.url(), Some(&token), Some("seed"), seed).await.status, 200);
    let out = Command::new(&schemathesis)
        .arg("--config-file")
        .arg(root.join("tests/schemathesis/schemathesis.toml"))
        .args(["run", &format!("{}/openapi.json", srv.url()), "--checks", "all"])
        .args(["--max-examples", EXAMPLES, "--generation-deterministic"])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", "")
        // Its cache of found failures goes beside the server's files, not into the source tree.
        .current_dir(srv.dir.path())
        .output()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "schemathesis found disagreements ({}):\n{stdout}\n{stderr}", out.status);
    // "Test cases:\n  N generated, N passed, ..." — the run must have tried a real number of cases.
    let generated: u64 = stdout
        .split_once("Test cases:")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no case count in schemathesis's output:\n{stdout}"));
    assert!(generated >= 300, "only {generated} cases ran:\n{stdout}");
    assert!(stdout.contains("No issues found"), "{stdout}");
    // A warning means a part of the run proved nothing, e.g. every request refused as unauthorized.
    assert!(!stdout.contains("Warnings:"), "schemathesis warned:\n{stdout}");
    eprintln!("schemathesis: {generated} cases, 0 disagreements");
}
