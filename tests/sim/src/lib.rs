//! A seeded, deterministic simulation of Converge: N devices with stores on disk, the real
//! `SyncService` on a SQLite server store, a network that drops, delays, reorders and duplicates,
//! offline periods, skewed clocks and restarts; then a quiet phase and convergence checks.
//!
//! Determinism: one seed decides every choice (a SplitMix64 generator), time is simulated (a
//! shared base clock the driver advances, skewed per device), ids come from seeded generators,
//! and the driver runs one action at a time to completion on a current-thread runtime, so the
//! interleaving is the driver's, not the scheduler's. That is why no simulation framework
//! (turmoil, a custom executor) is needed: nothing runs concurrently unless the driver says so.

mod check;
mod net;
mod rng;
mod run;
mod world;

use std::collections::BTreeMap;

pub use net::{FaultCounts, Rates};
pub use rng::{Rng, TraceHash};

/// What to simulate.
#[derive(Debug, Clone, Copy)]
pub struct SimConfig {
    /// Devices (default 3).
    pub devices: usize,
    /// Random actions before the quiet phase.
    pub steps: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig { devices: 3, steps: 120 }
    }
}

/// What one seed did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// A hash of every event and the final state: equal for equal seeds.
    pub trace_hash: u64,
    /// Local writes made.
    pub ops: u64,
    /// Conflicts (open and settled) by policy.
    pub conflicts_by_policy: BTreeMap<String, u64>,
    /// Faults injected.
    pub faults: FaultCounts,
    /// Device restarts.
    pub restarts: u64,
    /// Broken invariants; empty when the seed passed.
    pub failures: Vec<String>,
}

/// Runs one seed to completion and checks it.
pub fn run_seed(seed: u64, config: &SimConfig) -> Outcome {
    run::run(seed, config)
}

/// The command that replays a seed exactly.
pub fn replay_command(seed: u64, config: &SimConfig) -> String {
    format!("cargo run -p converge-cli -- sim --seed {seed} --devices {} --steps {}", config.devices, config.steps)
}

/// Totals over many seeds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    /// Seeds run.
    pub seeds: u64,
    /// Local writes over all seeds.
    pub ops: u64,
    /// Conflicts by policy over all seeds.
    pub conflicts_by_policy: BTreeMap<String, u64>,
    /// Faults over all seeds.
    pub faults: FaultCounts,
    /// Restarts over all seeds.
    pub restarts: u64,
    /// Seeds that failed, with their first failure.
    pub failed: Vec<(u64, String)>,
}

impl Summary {
    /// Adds one seed's outcome.
    pub fn add(&mut self, o: &Outcome) {
        self.seeds += 1;
        self.ops += o.ops;
        for (k, v) in &o.conflicts_by_policy {
            *self.conflicts_by_policy.entry(k.clone()).or_default() += v;
        }
        self.faults.dropped_requests += o.faults.dropped_requests;
        self.faults.dropped_responses += o.faults.dropped_responses;
        self.faults.duplicates += o.faults.duplicates;
        self.faults.delayed += o.faults.delayed;
        self.faults.offline_refusals += o.faults.offline_refusals;
        self.faults.server_errors += o.faults.server_errors;
        self.restarts += o.restarts;
        if let Some(f) = o.failures.first() {
            self.failed.push((o.seed, f.clone()));
        }
    }
}
