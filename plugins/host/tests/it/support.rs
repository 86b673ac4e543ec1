//! Finding the built plugins, and a shared engine.

use std::path::PathBuf;
use std::sync::OnceLock;

use converge_wasm::{PluginEngine, WasmPolicy};

/// The repository root.
pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The bytes of a plugin built by `scripts/build-plugins.sh` (`name` is the crate name with
/// `_`, e.g. `order_status`, `fixture_loop`).
pub(crate) fn wasm(name: &str) -> Vec<u8> {
    let path = repo().join(format!("target/guests/wasm32-unknown-unknown/release/{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "plugin {} not found ({e}): run `scripts/build-plugins.sh` first (it builds plugins/guests for \
             wasm32-unknown-unknown)",
            path.display()
        )
    })
}

/// Loads a built plugin into `engine`.
pub(crate) fn load(engine: &PluginEngine, name: &str) -> WasmPolicy {
    engine.load(&wasm(name)).unwrap_or_else(|e| panic!("load {name}: {e}"))
}

/// One engine shared by the tests that do not count compilations: compiling a plugin takes a
/// second or two in a debug build, and the shared cache makes it once per plugin.
pub(crate) fn engine() -> &'static PluginEngine {
    static ENGINE: OnceLock<PluginEngine> = OnceLock::new();
    ENGINE.get_or_init(|| PluginEngine::new().expect("a plugin engine"))
}
