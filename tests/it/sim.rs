//! The seeded simulation in CI: 500 seeds and every seed that ever failed, each run twice with
//! equal trace hashes; and exact replays while another process keeps every core busy.

use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use converge_sim::{SimConfig, replay_command, run_seed};

const SEEDS: u64 = 500;

/// Every seed that ever failed, with what it found. A seed found failing (by
/// `scripts/explore-sim.sh` or anyone) joins this list when its bug is fixed, and stays.
const REGRESSIONS: &[(u64, &str)] = &[
    (11730, "a write lost: an edit queued behind an op accepted over others' changes was rebased past them"),
    (17356, "a write lost, the same shape as 11730"),
    (424, "did not replay: a background checkpoint decided whether the read-ahead batch was kept"),
    (4576, "a write missing from the journal: a merge dropped the server's rewrite of the base's value"),
];

/// Runs each seed twice; returns a line per seed that failed a check or did not replay.
fn check_seeds(seeds: &[u64], config: &SimConfig) -> Vec<String> {
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let jobs = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(1, 4);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                while let Some(&seed) = seeds.get(next.fetch_add(1, Ordering::SeqCst)) {
                    let first = run_seed(seed, config);
                    let second = run_seed(seed, config);
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
                            replay_command(seed, config)
                        ));
                    }
                }
            });
        }
    });
    failures.into_inner().unwrap()
}

#[test]
fn five_hundred_seeds_converge_lose_nothing_and_replay_exactly() {
    let seeds: Vec<u64> = (0..SEEDS).collect();
    let failures = check_seeds(&seeds, &SimConfig::default());
    assert!(failures.is_empty(), "{} of {SEEDS} seeds failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_seed_that_ever_failed_passes_and_replays_exactly() {
    let seeds: Vec<u64> = REGRESSIONS.iter().map(|(s, _)| *s).collect();
    let failures = check_seeds(&seeds, &SimConfig::default());
    let found = |line: &String| {
        let seed: u64 = line.trim_start_matches("seed ").split(':').next().unwrap().parse().unwrap();
        REGRESSIONS.iter().find(|(s, _)| *s == seed).map_or("", |(_, what)| *what)
    };
    let lines: Vec<String> = failures.iter().map(|f| format!("{f}\n    (first found: {})", found(f))).collect();
    assert!(lines.is_empty(), "regression seeds failed again:\n{}", lines.join("\n"));
}

/// Processes that keep the machine's cores busy until dropped.
struct Load(Vec<Child>);

impl Load {
    fn start() -> Load {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let spin = || {
            Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .stdout(Stdio::null())
                .spawn()
                .expect("a busy-looping `sh` to load the machine (is /bin/sh there?)")
        };
        Load((0..cores).map(|_| spin()).collect())
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Seed 424 replayed differently about once in 14 runs under load while a background
/// checkpoint could decide the engine's read-ahead; nothing outside the driver may decide a run.
#[test]
fn seeds_replay_exactly_while_another_process_keeps_every_core_busy() {
    let _load = Load::start();
    let config = SimConfig::default();
    let mut differ = Vec::new();
    let runs = std::iter::repeat_n(424, 40).chain((1000..1010).flat_map(|s| std::iter::repeat_n(s, 4)));
    let mut first = std::collections::BTreeMap::new();
    for seed in runs {
        let hash = run_seed(seed, &config).trace_hash;
        let expected = *first.entry(seed).or_insert(hash);
        if hash != expected {
            differ.push(format!("seed {seed}: {expected:016x} then {hash:016x}"));
        }
    }
    assert!(differ.is_empty(), "runs under load did not replay:\n{}", differ.join("\n"));
}

#[test]
fn different_seeds_take_different_paths() {
    let config = SimConfig { devices: 3, steps: 60 };
    let a = run_seed(1, &config);
    let b = run_seed(2, &config);
    assert_ne!(a.trace_hash, b.trace_hash, "the seed must drive the run");
    assert!(a.ops > 0 && b.ops > 0);
}
