//! End-to-end tests over real parts: `converge serve` child processes on loopback (on a SQLite
//! file or on PostgreSQL), device stores in SQLite files on disk, real HTTP and gRPC.

mod bad_input;
mod bench;
mod commands;
mod compact;
mod conformance;
mod crash;
mod devices;
mod encryption;
mod grpc;
mod idempotency;
#[cfg(unix)]
mod kill9;
mod logs;
mod nodes;
mod notices;
mod overload;
mod pg_restart;
mod policy;
mod proxy;
mod record_changes;
mod schema_fuzz;
mod shards;
mod slow_clients;
mod stock_grpc;
mod worker;

use std::path::Path;
use std::sync::Arc;

use converge_core::Engine;
use converge_sqlite::SqliteStore;
use converge_test_support::ServerProcess;

pub(crate) fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_converge"))
}

pub(crate) fn server() -> ServerProcess {
    ServerProcess::start(bin()).expect("start converge serve")
}

/// A `converge serve` on PostgreSQL at `db` (a URL, or several joined by spaces for shards).
pub(crate) fn pg_server_on(db: &str) -> ServerProcess {
    ServerProcess::start_on(bin(), db, &[], &[]).expect("start converge serve on PostgreSQL")
}

/// A `converge serve` on a fresh PostgreSQL schema.
pub(crate) fn pg_server() -> ServerProcess {
    pg_server_on(&converge_test_support::pg::fresh_url())
}

/// A device: a store file in `dir` and a client to `url` (either wire).
pub(crate) fn device(dir: &Path, name: &str, url: &str, token: &str) -> Engine {
    let store = SqliteStore::open(dir.join(format!("{name}.db"))).expect("open device store");
    let api = converge_connect::connect(url, Arc::new(converge_core::StaticToken(token.to_owned()))).expect("client");
    Engine::builder(Box::new(store)).api(api).build().expect("engine")
}

/// A plain HTTP client for speaking the wire contract directly.
pub(crate) fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().expect("reqwest client")
}
