//! Loading: the same bytes compile once, a core module is encoded as a component, and anything
//! that imports, is not wasm, or lacks the world's exports is refused with a typed error.

use converge_core::MergePolicy;
use converge_wasm::{Error, PluginEngine};

use crate::support::wasm;

#[test]
fn the_same_bytes_compile_once() {
    let engine = PluginEngine::new().unwrap();
    let bytes = wasm("inventory");
    let first = engine.load(&bytes).unwrap();
    let second = engine.load(&bytes).unwrap();
    // A clone shares the cache.
    let third = engine.clone().load(&bytes).unwrap();
    assert_eq!(engine.compiled_count(), 1, "loaded three times, compiled once");
    assert_eq!((first.hash(), first.name()), (second.hash(), second.name()));
    assert_eq!(third.hash(), first.hash());
    engine.load(&wasm("order_status")).unwrap();
    assert_eq!(engine.compiled_count(), 2, "other bytes compile");
}

#[test]
fn a_core_module_and_the_component_made_from_it_both_load() {
    let engine = PluginEngine::new().unwrap();
    let module = wasm("inventory");
    assert_eq!(&module[4..8], &[1, 0, 0, 0], "the build makes a core module");
    let component =
        wit_component::ComponentEncoder::default().module(&module).unwrap().validate(true).encode().unwrap();
    let from_module = engine.load(&module).unwrap();
    let from_component = engine.load(&component).unwrap();
    assert_eq!(from_module.name(), "inventory");
    assert_eq!(from_component.name(), "inventory");
    assert_ne!(from_module.hash(), from_component.hash(), "keyed by the bytes given");
}

#[test]
fn a_component_that_imports_anything_is_refused_naming_the_import() {
    let engine = PluginEngine::new().unwrap();
    let func = wat::parse_str(r#"(component (import "host-clock" (func (result u64))))"#).unwrap();
    match engine.load(&func) {
        Err(Error::HasImports { imports }) => assert_eq!(imports, ["host-clock"]),
        other => panic!("expected HasImports, got {other:?}"),
    }
    let wasi = wat::parse_str(
        r#"(component
             (import "wasi:clocks/wall-clock@0.2.0" (instance))
             (import "wasi:random/random@0.2.0" (instance)))"#,
    )
    .unwrap();
    let err = engine.load(&wasi).unwrap_err();
    let message = err.to_string();
    assert!(matches!(&err, Error::HasImports { imports } if imports.len() == 2), "{err:?}");
    assert!(message.contains("`wasi:clocks/wall-clock@0.2.0`") && message.contains("must import nothing"), "{message}");
}

#[test]
fn a_core_module_with_imports_and_no_world_is_refused() {
    let engine = PluginEngine::new().unwrap();
    let module = wat::parse_str(r#"(module (import "env" "now" (func (result i64))))"#).unwrap();
    let err = engine.load(&module).unwrap_err();
    assert!(matches!(err, Error::Encode(_)), "{err:?}");
}

#[test]
fn a_module_the_encoder_panics_on_is_refused_not_a_crash() {
    // Found by the wasm_plugin fuzz target: wit-component indexes a section range unchecked.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/wasm_plugin/encoder_panic");
    let bytes = std::fs::read(&root).unwrap();
    let err = PluginEngine::new().unwrap().load(&bytes).unwrap_err();
    assert!(matches!(&err, Error::Encode(m) if m.contains("malformed")), "{err:?}");
}

#[test]
fn bytes_that_are_not_wasm_are_refused() {
    let engine = PluginEngine::new().unwrap();
    assert!(matches!(engine.load(b"not a plugin"), Err(Error::NotWasm)));
    assert!(matches!(engine.load(b""), Err(Error::NotWasm)));
}

#[test]
fn a_component_without_the_policy_exports_is_refused() {
    let engine = PluginEngine::new().unwrap();
    let empty = wat::parse_str("(component)").unwrap();
    let err = engine.load(&empty).unwrap_err();
    assert!(matches!(err, Error::Exports(_)), "{err:?}");
}

#[test]
fn plugins_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<converge_wasm::WasmPolicy>();
    assert_send_sync::<PluginEngine>();
}
