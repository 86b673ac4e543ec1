//! The `converge` command: run the sync server, mint tokens, drive a device store from the shell,
//! run the demo, and measure.

mod bench;
mod client;
mod demo;
mod duration;
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
    /// Drive a device store from the shell (only `sync` touches the network).
    Client(client::ClientArgs),
    /// Start a server and two devices that edit offline, sync, conflict and converge.
    Demo(demo::DemoArgs),
    /// Measure local writes, push throughput, end-to-end sync, a drained backlog and a first sync.
    Bench(bench::BenchArgs),
    /// Run the seeded simulation over many seeds and print a summary.
    Sim(sim::SimArgs),
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CONVERGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
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
