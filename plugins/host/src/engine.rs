//! `PluginEngine`: one wasmtime engine with fuel on, an empty linker (the sandbox), and a cache
//! of compiled plugins keyed by the SHA-256 of their bytes.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

use crate::bindings::PolicyPluginPre;
use crate::error::{Error, Result};
use crate::policy::WasmPolicy;
use crate::sandbox::Sandbox;

/// What one plugin call may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel per call (about one unit per wasm instruction); a call that runs out traps.
    pub fuel: u64,
    /// The most linear memory a plugin instance may have, in bytes.
    pub memory_bytes: usize,
}

impl Limits {
    /// The default fuel per call: 50 million units (a few milliseconds of a tight loop).
    pub const DEFAULT_FUEL: u64 = 50_000_000;
    /// The default memory cap: 16 MiB.
    pub const DEFAULT_MEMORY_BYTES: usize = 16 << 20;
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { fuel: Limits::DEFAULT_FUEL, memory_bytes: Limits::DEFAULT_MEMORY_BYTES }
    }
}

/// A plugin compiled once and shared by every [`WasmPolicy`] loaded from the same bytes.
pub(crate) struct Compiled {
    pub(crate) pre: PolicyPluginPre<Sandbox>,
    /// The SHA-256 of the bytes it was loaded from, in hex.
    pub(crate) hash: String,
}

struct Inner {
    engine: Engine,
    linker: Linker<Sandbox>,
    limits: Limits,
    cache: Mutex<HashMap<[u8; 32], Arc<Compiled>>>,
    compiled: AtomicUsize,
}

/// Loads merge-policy plugins. Cheap to clone (one shared engine and cache); make one per
/// process and load every plugin through it.
///
/// The sandbox is an empty linker: a plugin gets no WASI, no filesystem, network, environment,
/// clock or randomness, and a component that imports anything is refused at load. Each call
/// runs in a fresh store with [`Limits`].
#[derive(Clone)]
pub struct PluginEngine {
    inner: Arc<Inner>,
}

impl fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PluginEngine")
            .field("limits", &self.inner.limits)
            .field("compiled", &self.compiled_count())
            .finish_non_exhaustive()
    }
}

impl PluginEngine {
    /// An engine with the default [`Limits`].
    pub fn new() -> Result<PluginEngine> {
        PluginEngine::with_limits(Limits::default())
    }

    /// An engine whose plugins get `limits` per call (a plugin can be given others with
    /// [`WasmPolicy::with_limits`]).
    pub fn with_limits(limits: Limits) -> Result<PluginEngine> {
        let mut config = Config::new();
        config.consume_fuel(true);
        let engine = Engine::new(&config).map_err(|e| Error::Engine(e.to_string()))?;
        let linker = Linker::new(&engine);
        Ok(PluginEngine {
            inner: Arc::new(Inner {
                engine,
                linker,
                limits,
                cache: Mutex::new(HashMap::new()),
                compiled: AtomicUsize::new(0),
            }),
        })
    }

    /// The limits plugins loaded here get.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// How many plugins this engine has compiled: loading the same bytes again reuses the
    /// compiled plugin and does not count.
    pub fn compiled_count(&self) -> usize {
        self.inner.compiled.load(Ordering::Relaxed)
    }

    /// Loads a plugin from a file (see [`PluginEngine::load`]).
    pub fn load_file(&self, path: &Path) -> Result<WasmPolicy> {
        self.load(&std::fs::read(path)?)
    }

    /// Loads a plugin: a component, or a core module built with `converge-plugin-sdk` (turned
    /// into a component here). Refuses one that imports anything or does not export the
    /// `converge:policy@0.1.0` world, then calls its `describe` for the name.
    pub fn load(&self, bytes: &[u8]) -> Result<WasmPolicy> {
        let compiled = self.compile(bytes)?;
        WasmPolicy::describe(self.inner.engine.clone(), compiled, self.inner.limits)
    }

    fn compile(&self, bytes: &[u8]) -> Result<Arc<Compiled>> {
        let key: [u8; 32] = Sha256::digest(bytes).into();
        // Held while compiling, so the same bytes loaded from two threads compile once.
        let mut cache = self.inner.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(hit) = cache.get(&key) {
            return Ok(hit.clone());
        }
        let component_bytes = match kind(bytes) {
            Kind::Component => std::borrow::Cow::Borrowed(bytes),
            Kind::Module => std::borrow::Cow::Owned(encode(bytes)?),
            Kind::Other => return Err(Error::NotWasm),
        };
        let engine = &self.inner.engine;
        let component = Component::new(engine, &component_bytes).map_err(|e| Error::Compile(format!("{e:#}")))?;
        self.inner.compiled.fetch_add(1, Ordering::Relaxed);
        let imports: Vec<String> =
            component.component_type().imports(engine).map(|(name, _)| name.to_owned()).collect();
        if !imports.is_empty() {
            return Err(Error::HasImports { imports });
        }
        let pre = self.inner.linker.instantiate_pre(&component).map_err(|e| Error::Exports(format!("{e:#}")))?;
        let pre = PolicyPluginPre::new(pre).map_err(|e| Error::Exports(format!("{e:#}")))?;
        let hash = key.iter().map(|b| format!("{b:02x}")).collect();
        let compiled = Arc::new(Compiled { pre, hash });
        cache.insert(key, compiled.clone());
        Ok(compiled)
    }
}

enum Kind {
    Module,
    Component,
    Other,
}

/// Tells a core module from a component by the preamble: magic, then version and layer.
fn kind(bytes: &[u8]) -> Kind {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Kind::Module,
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => Kind::Component,
        _ => Kind::Other,
    }
}

/// Turns a core module (with the component-type metadata wit-bindgen embeds) into a component,
/// as `wasm-tools component new` does.
///
/// wit-component can panic on a malformed module (fuzzing found a section range it indexes
/// without checking, in 0.254), so a panic there is a refused plugin, not a host taken down.
fn encode(module: &[u8]) -> Result<Vec<u8>> {
    let encoded = std::panic::catch_unwind(|| {
        wit_component::ComponentEncoder::default().module(module).and_then(|e| e.validate(true).encode())
    });
    match encoded {
        Ok(Ok(component)) => Ok(component),
        Ok(Err(e)) => Err(Error::Encode(format!("{e:#}"))),
        Err(_) => Err(Error::Encode("the module is malformed (the encoder gave up on it)".into())),
    }
}
