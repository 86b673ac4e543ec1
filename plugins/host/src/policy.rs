//! `WasmPolicy`: a loaded plugin as a `converge_core::MergePolicy`. Each call runs in a fresh
//! store with fuel and the memory cap; whatever the plugin does wrong becomes a needs-review
//! resolution that names the plugin and the fault.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use converge_core::{CheckMode, Fields, MergeInput, MergePolicy, Resolution};
use wasmtime::{Engine, Store, Trap};

use crate::bindings::{Conflict, Description, FieldMeta, Merged, Outcome, PolicyPlugin};
use crate::engine::{Compiled, Limits};
use crate::error::{Error, Fault, Result};
use crate::sandbox::Sandbox;

/// The longest notice or review reason kept from a plugin, in bytes.
const MAX_TEXT: usize = 1024;
/// How many hex digits of the plugin's hash name it in reasons and logs.
const SHORT_HASH: usize = 12;

/// A merge policy run by a WASM plugin (see [`crate::PluginEngine::load`]).
///
/// Its name is the one the plugin's `describe` gives; its check mode is `fields` unless set
/// with [`WasmPolicy::with_check_mode`].
#[derive(Clone)]
pub struct WasmPolicy {
    engine: Engine,
    compiled: Arc<Compiled>,
    limits: Limits,
    check_mode: CheckMode,
    name: String,
    version: String,
    entities: Vec<String>,
}

impl fmt::Debug for WasmPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WasmPolicy")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("entities", &self.entities)
            .field("hash", &self.short_hash())
            .field("limits", &self.limits)
            .field("check_mode", &self.check_mode)
            .finish()
    }
}

impl WasmPolicy {
    /// Asks a freshly compiled (or cached) plugin who it is.
    pub(crate) fn describe(engine: Engine, compiled: Arc<Compiled>, limits: Limits) -> Result<WasmPolicy> {
        let mut policy = WasmPolicy {
            engine,
            compiled,
            limits,
            check_mode: CheckMode::Fields,
            name: String::new(),
            version: String::new(),
            entities: Vec::new(),
        };
        let Description { name, version, entities, check_mode } = policy
            .run(|plugin, store| plugin.call_describe(store))
            .map_err(|fault| Error::Describe(format!("plugin sha256 {}: {fault}", policy.short_hash())))?;
        if name.trim().is_empty() || name.len() > 100 {
            return Err(Error::Describe("the name must be 1 to 100 bytes and not blank".into()));
        }
        policy.check_mode = match check_mode.as_str() {
            "" => CheckMode::Fields,
            mode => CheckMode::parse(mode)
                .map_err(|_| Error::Describe(format!("check mode {mode:?}: a check mode is fields, record or lww")))?,
        };
        policy.name = name;
        policy.version = version;
        policy.entities = entities;
        Ok(policy)
    }

    /// The same plugin with another check mode for its entities' mutations.
    pub fn with_check_mode(mut self, mode: CheckMode) -> WasmPolicy {
        self.check_mode = mode;
        self
    }

    /// The same plugin with other per-call limits.
    pub fn with_limits(mut self, limits: Limits) -> WasmPolicy {
        self.limits = limits;
        self
    }

    /// The plugin's version, as its `describe` gives it.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The entity types the plugin says it is written for.
    pub fn entities(&self) -> &[String] {
        &self.entities
    }

    /// The SHA-256 of the bytes it was loaded from, in hex.
    pub fn hash(&self) -> &str {
        &self.compiled.hash
    }

    /// The first 12 hex digits of [`WasmPolicy::hash`].
    pub fn short_hash(&self) -> &str {
        &self.compiled.hash[..SHORT_HASH]
    }

    /// The limits each call gets.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Runs the plugin on a conflict and says what went wrong if it misbehaved.
    /// [`MergePolicy::resolve`] turns a fault into a needs-review resolution.
    pub fn try_resolve(&self, input: &MergeInput<'_>) -> Result<Resolution, Fault> {
        let conflict = to_conflict(input);
        let outcome = self.run(|plugin, store| plugin.call_resolve(store, &conflict))?;
        from_outcome(outcome)
    }

    /// Runs `call` on a new instance in a fresh store with fuel and the memory cap.
    fn run<R>(&self, call: impl FnOnce(&PolicyPlugin, &mut Store<Sandbox>) -> wasmtime::Result<R>) -> Result<R, Fault> {
        let mut store = Store::new(&self.engine, Sandbox::new(self.limits.memory_bytes));
        store.limiter(|sandbox| sandbox);
        store.set_fuel(self.limits.fuel).map_err(|e| Fault::Failed(e.to_string()))?;
        let result = self.compiled.pre.instantiate(&mut store).and_then(|plugin| call(&plugin, &mut store));
        result.map_err(|e| self.classify(&e, store.data()))
    }

    fn classify(&self, err: &wasmtime::Error, sandbox: &Sandbox) -> Fault {
        if sandbox.memory_hit {
            return Fault::MemoryLimit { limit: self.limits.memory_bytes };
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => Fault::OutOfFuel { limit: self.limits.fuel },
            Some(trap) => {
                let text = trap.to_string();
                Fault::Trapped(text.strip_prefix("wasm trap: ").unwrap_or(&text).to_owned())
            }
            None => Fault::Failed(clip(err.root_cause().to_string())),
        }
    }
}

impl MergePolicy for WasmPolicy {
    fn name(&self) -> &str {
        &self.name
    }

    fn check_mode(&self) -> CheckMode {
        self.check_mode
    }

    fn resolve(&self, input: &MergeInput<'_>) -> Resolution {
        let started = Instant::now();
        match self.try_resolve(input) {
            Ok(resolution) => resolution,
            Err(fault) => {
                // Codes only: never the record's contents.
                tracing::warn!(
                    plugin = %self.name,
                    hash = %self.short_hash(),
                    entity = %input.entity,
                    code = fault.code(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "wasm merge policy failed; the conflict is left for review"
                );
                Resolution::NeedsReview {
                    reason: format!("plugin {} (sha256 {}) {fault}; left for review", self.name, self.short_hash()),
                }
            }
        }
    }
}

fn json(fields: &Fields) -> String {
    serde_json::to_string(fields).unwrap_or_else(|_| "{}".to_owned())
}

fn to_conflict(input: &MergeInput<'_>) -> Conflict {
    Conflict {
        entity: input.entity.to_owned(),
        record_id: input.record_id.to_owned(),
        base: json(input.base),
        local: json(input.local),
        local_hlc: input.local_hlc.to_string(),
        server: json(input.server),
        server_meta: input
            .server_meta
            .iter()
            .map(|(field, clock)| FieldMeta {
                field: field.clone(),
                version: clock.version,
                hlc: clock.hlc.to_string(),
            })
            .collect(),
        server_version: input.server_version,
        server_deleted: input.server_deleted,
        conflicting: input.conflicting.to_vec(),
    }
}

pub(crate) fn from_outcome(outcome: Outcome) -> Result<Resolution, Fault> {
    Ok(match outcome {
        Outcome::TakeLocal => Resolution::TakeLocal,
        Outcome::TakeServer => Resolution::TakeServer,
        Outcome::Merged(Merged { fields, notice }) => {
            let fields = match serde_json::from_str::<serde_json::Value>(&fields) {
                Ok(serde_json::Value::Object(fields)) => fields,
                Ok(other) => return Err(Fault::Malformed(format!("a JSON {}, not an object", kind_of(&other)))),
                Err(e) => return Err(Fault::Malformed(format!("not JSON ({e})"))),
            };
            Resolution::Merged { fields, notice: clip(notice) }
        }
        Outcome::NeedsReview(reason) => Resolution::NeedsReview { reason: clip(reason) },
    })
}

fn kind_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Keeps at most [`MAX_TEXT`] bytes, cut at a character boundary.
fn clip(mut text: String) -> String {
    if text.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_fields_must_be_a_json_object() {
        let merged = |fields: &str| Outcome::Merged(Merged { fields: fields.into(), notice: "n".into() });
        assert!(matches!(from_outcome(merged("{\"a\":1}")), Ok(Resolution::Merged { .. })));
        assert_eq!(from_outcome(merged("[1]")), Err(Fault::Malformed("a JSON array, not an object".into())));
        assert!(matches!(from_outcome(merged("{oops")), Err(Fault::Malformed(m)) if m.starts_with("not JSON")));
    }

    #[test]
    fn long_text_is_clipped_at_a_char_boundary() {
        let clipped = clip("é".repeat(MAX_TEXT));
        assert!(clipped.len() <= MAX_TEXT + '…'.len_utf8());
        assert!(clipped.ends_with('…'));
        assert_eq!(clip("short".into()), "short");
    }
}
