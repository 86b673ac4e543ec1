//! Paths of the built artifacts the FFI tests use, and binding generation through
//! `uniffi-bindgen`; a missing artifact fails with the command that builds it.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `target/debug` (or the profile this test was built in).
pub(crate) fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>").to_path_buf()
}

/// An artifact of the workspace's build, or a failure saying how to build it.
pub(crate) fn artifact(name: &str, build: &str) -> PathBuf {
    let path = profile_dir().join(name);
    assert!(path.exists(), "{} is missing: build it with `{build}` (scripts/test.sh does)", path.display());
    path
}

/// The cdylib this package builds: the one `cargo test` built beside this test (in `deps/`;
/// only `cargo build` copies it up a folder, where it may be older).
pub(crate) fn library() -> PathBuf {
    let beside = profile_dir().join("deps").join("libconverge_ffi.so");
    if beside.exists() { beside } else { artifact("libconverge_ffi.so", "cargo build -p converge-ffi") }
}

/// The repository's root.
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

/// Generates `language` bindings of the library into `out`.
pub(crate) fn generate(language: &str, out: &Path) {
    let bindgen = artifact("uniffi-bindgen", "cargo build -p converge-uniffi-bindgen");
    let status = Command::new(bindgen)
        .args(["generate", "--library"])
        .arg(library())
        .args(["--language", language, "--out-dir"])
        .arg(out)
        .status()
        .expect("run uniffi-bindgen");
    assert!(status.success(), "uniffi-bindgen generate --language {language} failed");
}

#[test]
fn the_committed_swift_bindings_are_current() {
    let out = tempfile::tempdir().unwrap();
    generate("swift", out.path());
    let committed = root().join("ffi/swift");
    let mut names: Vec<_> =
        std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["converge_ffi.swift", "converge_ffiFFI.h", "converge_ffiFFI.modulemap"]);
    for name in names {
        let fresh = std::fs::read_to_string(out.path().join(&name)).unwrap();
        let kept = std::fs::read_to_string(committed.join(&name)).unwrap_or_default();
        assert!(
            fresh == kept,
            "ffi/swift/{name} is not what the library generates now: run scripts/gen-swift.sh and commit the result"
        );
    }
}
