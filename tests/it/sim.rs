//! The seeded simulation in CI: at least 500 seeds, each run twice with equal trace hashes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use converge_sim::{SimConfig, replay_command, run_seed};

const SEEDS: u64 = 500;

#[test]
fn five_hundred_seeds_converge_lose_nothing_and_replay_exactly() {
    let config = SimConfig::default();
    let next = AtomicU64::new(0);
    let failures = Mutex::new(Vec::new());
    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(1, 4);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    if seed >= SEEDS {
                        break;
                    }
                    let first = run_seed(seed, &config);
                    let second = run_seed(seed, &config);
                    let mut problems = first.failures.clone();
                    if first.trace_hash != second.trace_hash {
                        problems.push(format!(
                            "trace hashes differ: {:016x} then {:016x}",
                            first.trace_hash, second.trace_hash
                        ));
                    }
                    if !problems.is_empty() {
                        failures.lock().unwrap().push(format!(
                            "seed {seed}: {}\n    replay: {}",
                            problems.join("; "),
                            replay_command(seed, &config)
                        ));
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap();
    assert!(failures.is_empty(), "{} of {SEEDS} seeds failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn different_seeds_take_different_paths() {
    let config = SimConfig { devices: 3, steps: 60 };
    let a = run_seed(1, &config);
    let b = run_seed(2, &config);
    assert_ne!(a.trace_hash, b.trace_hash, "the seed must drive the run");
    assert!(a.ops > 0 && b.ops > 0);
}
