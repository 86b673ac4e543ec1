//! The per-call store data: the memory cap, enforced through wasmtime's `ResourceLimiter`, and
//! whether the call hit it (so the fault can be named).

use wasmtime::ResourceLimiter;

/// The most table elements a plugin instance may have.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// The data of a plugin call's store.
pub(crate) struct Sandbox {
    memory_cap: usize,
    pub(crate) memory_hit: bool,
}

impl Sandbox {
    pub(crate) fn new(memory_cap: usize) -> Sandbox {
        Sandbox { memory_cap, memory_hit: false }
    }
}

impl ResourceLimiter for Sandbox {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            // An error (rather than `Ok(false)`) traps at once instead of letting the guest's
            // allocator see a failed grow.
            self.memory_hit = true;
            return Err(wasmtime::Error::msg("memory limit"));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
