//! Runs the Python suite (`ffi/tests/python`, pytest) against the generated Python bindings of
//! the real cdylib and real `converge serve` child processes.

use std::process::Command;

use crate::bindings::{artifact, generate, library, root};

#[test]
fn the_python_suite_passes_against_the_real_library_and_server() {
    let python = root().join("target/pyenv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/python-env.sh (scripts/test.sh does)", python.display());
    let converge = artifact("converge", "cargo build -p converge-cli");
    let out = tempfile::tempdir().unwrap();
    generate("python", out.path());
    std::os::unix::fs::symlink(library(), out.path().join("libconverge_ffi.so")).unwrap();
    let result = Command::new(python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "--durations=5"])
        .arg(root().join("ffi/tests/python"))
        .env("CONVERGE_BIN", converge)
        .env("CONVERGE_FFI_BINDINGS", out.path())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run pytest");
    let report = format!("{}{}", String::from_utf8_lossy(&result.stdout), String::from_utf8_lossy(&result.stderr));
    println!("{report}");
    assert!(result.status.success(), "the Python FFI suite failed:\n{report}");
}
