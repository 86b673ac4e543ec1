//! Converge's sandboxed host for merge-policy plugins written in WebAssembly.
//!
//! A plugin is a component of the `converge:policy@0.1.0` world (`plugins/wit/policy.wit`)
//! with zero imports, usually written with `converge-plugin-sdk`. [`PluginEngine`] loads it
//! (a component, or a core module it encodes as one), refusing anything that imports a
//! function, and compiles each distinct plugin once. [`WasmPolicy`] implements
//! [`converge_core::MergePolicy`]: every call gets a fresh store with fuel and a memory cap
//! ([`Limits`]), so a loop, a runaway allocation, a trap or malformed output never takes the
//! host down — the conflict is left for review with a reason naming the plugin and the fault.
//!
//! ```no_run
//! # fn main() -> converge_wasm::Result<()> {
//! let plugins = converge_wasm::PluginEngine::new()?;
//! let inventory = plugins.load_file("target/guests/wasm32-unknown-unknown/release/inventory.wasm".as_ref())?;
//! // Engine::builder(store).policy("items", Box::new(inventory))...
//! # Ok(())
//! # }
//! ```

mod bindings;
mod engine;
mod error;
mod policy;
mod sandbox;

/// What the fuzz targets (`fuzz/`) reach that is otherwise internal; not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    use converge_core::Resolution;

    use crate::bindings::{Merged, Outcome};
    use crate::error::Fault;

    /// Reads a plugin's merged answer as the host does after a call.
    pub fn merged_answer(fields: &str, notice: String) -> Result<Resolution, Fault> {
        crate::policy::from_outcome(Outcome::Merged(Merged { fields: fields.to_owned(), notice }))
    }
}

pub use engine::{Limits, PluginEngine};
pub use error::{Error, Fault, Result};
pub use policy::WasmPolicy;
