//! Swap the transport: the same small app syncs over HTTP, then over gRPC. The one line that
//! differs is the server URL given to `converge_connect::connect`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, ensure};
use converge_connect::Transport;
use converge_core::{AuthProvider, Engine, Fields, StaticToken};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let server = start_server(dir.path()).await?;

    // The same app twice: the server URL is all that differs, and it picks the wire.
    app(&server.http_url, &server.token, &dir.path().join("app-over-http")).await?;
    app(&server.grpc_url, &server.token, &dir.path().join("app-over-grpc")).await?;
    println!("\none server, one store behind both wires: the devices on gRPC also pulled the notes written over HTTP");
    Ok(())
}

/// The app: two devices of one user write a few notes, sync, and end with the same records.
/// `server_url` picks the wire: `http://…` or `grpc://…`.
async fn app(server_url: &str, token: &str, dir: &Path) -> Result<()> {
    println!("\n== syncing over {} ({server_url})", Transport::of(server_url)?);
    std::fs::create_dir_all(dir)?;
    let auth: Arc<dyn AuthProvider> = Arc::new(StaticToken(token.to_owned()));
    let device = |name: &str| -> Result<Engine> {
        let store = converge_sqlite::SqliteStore::open(dir.join(format!("{name}.db")))?;
        let api = converge_connect::connect(server_url, auth.clone())?;
        Ok(Engine::builder(Box::new(store)).api(api).build()?)
    };
    let (phone, laptop) = (device("phone")?, device("laptop")?);

    let groceries = phone.create("notes", fields(json!({"title": "groceries", "body": ""})))?.record_id;
    phone.create("notes", fields(json!({"title": "trip", "body": "Lisbon?"})))?;
    println!("phone  writes two notes: groceries, trip");
    sync("phone", &phone).await?;
    sync("laptop", &laptop).await?;

    laptop.patch("notes", &groceries, fields(json!({"body": "milk, eggs"})))?;
    laptop.create("notes", fields(json!({"title": "ideas", "body": "a sync engine"})))?;
    println!("laptop edits groceries and writes a note: ideas");
    sync("laptop", &laptop).await?;
    sync("phone", &phone).await?;

    let (on_phone, on_laptop) = (phone.list("notes")?, laptop.list("notes")?);
    ensure!(on_phone == on_laptop, "the devices did not converge:\n{on_phone:?}\n{on_laptop:?}");
    ensure!(phone.status().pending == 0 && laptop.status().pending == 0, "changes are left unsent");
    let body = on_phone.iter().find(|n| n.record_id == groceries).and_then(|n| n.fields.get("body"));
    ensure!(body == Some(&json!("milk, eggs")), "the laptop's edit did not reach the phone");
    println!("converged: phone and laptop hold the same {} notes", on_phone.len());
    Ok(())
}

async fn sync(name: &str, device: &Engine) -> Result<()> {
    let r = device.sync_once().await?;
    println!("{name:<6} syncs: {} change(s) pushed, {} pulled", r.accepted, r.pulled);
    Ok(())
}

fn fields(v: Value) -> Fields {
    v.as_object().cloned().unwrap_or_default()
}

// --- The sync server. An app talks to one that runs elsewhere (`converge serve`); the example
// --- starts its own on loopback, so that it runs on its own.

/// Where the server listens, and a token it accepts.
struct Server {
    http_url: String,
    grpc_url: String,
    token: String,
}

/// Starts the sync server on a SQLite file in `dir`: HTTP and gRPC (each on a port the OS picks)
/// over one service and one store, as `converge serve` does. The token is for the user alice of
/// the tenant acme.
async fn start_server(dir: &Path) -> Result<Server> {
    let store = converge_server::SqliteServerStore::open(&dir.join("server.db"))?;
    let service = Arc::new(converge_server::SyncService::new(Arc::new(store), Default::default()));
    let auth = Arc::new(converge_server::JwtAuth::new(b"example-secret"));
    let token = auth.issue("acme", "alice", Duration::from_secs(3600))?;

    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (http_url, grpc_url) = (format!("http://{}", http.local_addr()?), format!("grpc://{}", grpc.local_addr()?));
    let router = converge_http::server::router(service.clone(), auth.clone(), Default::default());
    let routes = converge_grpc::server::routes(service, auth, Default::default()).await?;
    tokio::spawn(converge_http::server::serve(http, router, std::future::pending()));
    tokio::spawn(converge_grpc::server::serve(grpc, routes, std::future::pending()));
    Ok(Server { http_url, grpc_url, token })
}
