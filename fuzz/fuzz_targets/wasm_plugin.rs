//! A WASM plugin's bytes as the host loads them; one that loads is asked to resolve a conflict
//! and must answer or fail with a fault, never take the host down.
#![no_main]

use std::sync::OnceLock;

use converge_core::{Fields, Hlc, MergeInput};
use converge_wasm::PluginEngine;
use libfuzzer_sys::fuzz_target;

fn engine() -> &'static PluginEngine {
    static ENGINE: OnceLock<PluginEngine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        // libfuzzer-sys aborts on every panic, even one the host catches on purpose (it contains
        // the plugin encoder's). The default hook is back; a panic that escapes still aborts.
        drop(std::panic::take_hook());
        PluginEngine::new().expect("a plugin engine")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(policy) = engine().load(data) else { return };
    let fields: Fields = serde_json::from_str(r#"{"title":"a","n":1}"#).unwrap();
    let hlc: Hlc = "1764064800000-0000-dev".parse().unwrap();
    let input = MergeInput {
        entity: "notes",
        record_id: "r1",
        base: &fields,
        local: &fields,
        local_hlc: &hlc,
        server: &fields,
        server_meta: &Default::default(),
        server_version: 2,
        server_deleted: false,
        conflicting: &[],
    };
    let _ = policy.try_resolve(&input);
});
