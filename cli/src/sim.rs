//! `converge sim`: runs the seeded simulation over many seeds and prints a summary; a failing
//! seed is printed with the command that replays it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Args;
use converge_sim::{Outcome, SimConfig, Summary, replay_command, run_seed};

/// Options of `converge sim`.
#[derive(Args)]
pub(crate) struct SimArgs {
    /// How many seeds to run (from --start).
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Run just this seed and print its failures and trace hash.
    #[arg(long)]
    seed: Option<u64>,
    /// Devices per run.
    #[arg(long, default_value_t = 3)]
    devices: usize,
    /// Random actions per run before the quiet phase.
    #[arg(long, default_value_t = 120)]
    steps: usize,
    /// Parallel runs (default: the number of cores).
    #[arg(long)]
    jobs: Option<usize>,
    /// Run every seed twice and require equal trace hashes.
    #[arg(long)]
    twice: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: SimArgs) -> Result<()> {
    if args.devices == 0 {
        bail!("--devices must be at least 1");
    }
    let config = SimConfig { devices: args.devices, steps: args.steps };
    if let Some(seed) = args.seed {
        // Each run makes its own runtime, so it runs on a thread of its own.
        let o = std::thread::scope(|s| s.spawn(|| run_seed(seed, &config)).join())
            .map_err(|_| anyhow::anyhow!("seed {seed} panicked"))?;
        println!(
            "seed {seed}: trace hash {:016x}, {} writes, conflicts {:?}",
            o.trace_hash, o.ops, o.conflicts_by_policy
        );
        println!("faults: {:?}, restarts: {}", o.faults, o.restarts);
        for f in &o.failures {
            println!("FAIL: {f}");
        }
        if !o.failures.is_empty() {
            bail!("seed {seed} failed {} check(s)", o.failures.len());
        }
        return Ok(());
    }
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).max(1);
    let next = AtomicU64::new(args.start);
    let end = args.start + args.seeds;
    let summary = Mutex::new(Summary::default());
    let done = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    if seed >= end {
                        break;
                    }
                    let mut o = run_seed(seed, &config);
                    if args.twice {
                        let again = run_seed(seed, &config);
                        if again.trace_hash != o.trace_hash {
                            o.failures.push(format!(
                                "not deterministic: trace hashes {:016x} and {:016x}",
                                o.trace_hash, again.trace_hash
                            ));
                        }
                    }
                    report(&o, &config);
                    summary.lock().unwrap_or_else(|e| e.into_inner()).add(&o);
                    let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                    if !args.json && (n.is_multiple_of(50) || n == args.seeds) {
                        eprintln!("  {n}/{} seeds, {:.0} s", args.seeds, started.elapsed().as_secs_f64());
                    }
                }
            });
        }
    });
    let summary = summary.into_inner().unwrap_or_else(|e| e.into_inner());
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "{} seeds ({} devices, {} steps{}) in {:.1} s: {} writes, conflicts by policy {:?}",
            summary.seeds,
            config.devices,
            config.steps,
            if args.twice { ", each run twice" } else { "" },
            started.elapsed().as_secs_f64(),
            summary.ops,
            summary.conflicts_by_policy
        );
        let f = summary.faults;
        println!(
            "faults injected: {} requests dropped, {} responses dropped, {} duplicates, {} delayed, {} server errors, {} offline refusals, {} restarts",
            f.dropped_requests,
            f.dropped_responses,
            f.duplicates,
            f.delayed,
            f.server_errors,
            f.offline_refusals,
            summary.restarts
        );
        println!("failures: {}", summary.failed.len());
    }
    if !summary.failed.is_empty() {
        bail!("{} seed(s) failed; replay one with the command printed above", summary.failed.len());
    }
    Ok(())
}

fn report(o: &Outcome, config: &SimConfig) {
    if o.failures.is_empty() {
        return;
    }
    eprintln!("seed {} FAILED ({} checks):", o.seed, o.failures.len());
    for f in o.failures.iter().take(5) {
        eprintln!("  - {f}");
    }
    eprintln!("  replay: {}", replay_command(o.seed, config));
}
