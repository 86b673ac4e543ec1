//! The `converge` command: run the sync server, mint tokens, drive a device store from the shell,
//! run the demo, measure, and test and scaffold merge policies.

mod bench;
mod client;
mod demo;
mod duration;
mod policy;
mod serve;
mod sim;

use clap::{Parser, Subcommand};

/// Converge: an offline-first sync engine.
#[derive(Parser)]
#[command(name = "converge", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sync server (SQLite file converge-server.db, 127.0.0.1:7878 by default).
    Serve(serve::ServeArgs),
    /// Print a bearer token for a tenant and user.
    Token(serve::TokenArgs),
    /// Show the PostgreSQL shards and where tenants live on them.
    Shards(serve::ShardsArgs),
    /// Drive a device store from the shell (only `sync` touches the network).
    Client(client::ClientArgs),
    /// Start a server and two devices that edit offline, sync, conflict and converge.
    Demo(demo::DemoArgs),
    /// Measure local writes, push throughput, end-to-end sync, a drained backlog and a first sync.
    Bench(bench::BenchArgs),
    /// Run the seeded simulation over many seeds and print a summary.
    Sim(sim::SimArgs),
    /// Test a merge policy against a cases file, or create a new policy plugin project.
    Policy(policy::PolicyArgs),
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CONVERGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal: a redirected log gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}

/// Refuses a `CONVERGE_CRASH_AT` this build cannot honour: set on a build without crash points
/// (a kill -9 test would silently run to the end), or naming an unknown point or a bad count.
fn check_crash_env(value: Option<&str>, enabled: bool) -> Result<(), String> {
    use converge_core::crash;
    let Some(v) = value.filter(|v| !v.is_empty()) else { return Ok(()) };
    if !enabled {
        return Err(format!(
            "{}={v:?} is set, but this build of converge has no crash points (converge-core's \
             `crash-points` feature; the test build of converge-cli has it): unset it or use a test build",
            crash::ENV
        ));
    }
    let (label, nth) = v.split_once(':').map_or((v, None), |(l, n)| (l, Some(n)));
    if !crash::POINTS.contains(&label) {
        return Err(format!(
            "{}={v:?}: no crash point is called {label:?}; the points are: {}",
            crash::ENV,
            crash::POINTS.join(", ")
        ));
    }
    if let Some(n) = nth
        && !n.parse::<u64>().is_ok_and(|n| n >= 1)
    {
        return Err(format!(
            "{}={v:?}: after the ':' comes the hit to abort at, a whole number from 1 (e.g. {label}:2)",
            crash::ENV
        ));
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let crash_at = std::env::var(converge_core::crash::ENV).ok();
    if let Err(e) = check_crash_env(crash_at.as_deref(), converge_core::crash::ENABLED) {
        eprintln!("error: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => {
                init_tracing("info");
                serve::run(args).await
            }
            Command::Token(args) => serve::token(args),
            Command::Shards(args) => {
                init_tracing("warn");
                serve::shards(args).await
            }
            Command::Client(args) => {
                init_tracing("warn");
                client::run(args).await
            }
            Command::Demo(args) => {
                init_tracing("warn");
                demo::run(args).await
            }
            Command::Bench(args) => {
                init_tracing("warn");
                bench::run(args).await
            }
            Command::Sim(args) => {
                init_tracing("error");
                sim::run(args)
            }
            Command::Policy(args) => {
                init_tracing("warn");
                policy::run(args)
            }
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_crash_env;

    #[test]
    fn crash_env_is_checked() {
        assert_eq!(check_crash_env(None, false), Ok(()));
        assert_eq!(check_crash_env(Some(""), false), Ok(()));
        let unarmed = check_crash_env(Some("ack.after_commit:2"), false).unwrap_err();
        assert!(unarmed.contains("no crash points"), "{unarmed}");
        assert_eq!(check_crash_env(Some("ack.after_commit"), true), Ok(()));
        assert_eq!(check_crash_env(Some("server.apply.after_commit:3"), true), Ok(()));
        let unknown = check_crash_env(Some("ack.after:2"), true).unwrap_err();
        assert!(unknown.contains("\"ack.after\"") && unknown.contains("pull.before_cursor"), "{unknown}");
        for bad in ["ack.after_commit:", "ack.after_commit:0", "ack.after_commit:x", "ack.after_commit:-1"] {
            assert!(check_crash_env(Some(bad), true).unwrap_err().contains("whole number"), "{bad}");
        }
    }
}
