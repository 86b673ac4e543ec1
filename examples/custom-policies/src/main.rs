//! Custom merge policies: an app registers one policy per entity type — a built-in, a Rust
//! closure and a WASM plugin — and each settles a conflict between two devices.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use converge_core::{AuthProvider, CheckMode, Engine, Fields, MergePolicy, Resolution, StaticToken};
use converge_policies::{FieldMerge, policy_fn};
use serde_json::{Value, json};

/// The `inventory` plugin (stock counts add up both sides' deltas), where
/// `scripts/build-plugins.sh` builds it.
const INVENTORY_WASM: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/guests/wasm32-unknown-unknown/release/inventory.wasm");

#[tokio::main]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (url, token) = start_server(dir.path()).await?;

    // 1. A built-in: a three-way merge per field; text edited on both sides merges line by line.
    let notes: Arc<dyn MergePolicy> = Arc::new(FieldMerge);
    // 2. A Rust closure: a high score keeps the higher value, whichever device synced first.
    let scores = policy_fn("keep_best", CheckMode::Fields, |conflict| {
        let best = |fields: &Fields| fields.get("best").and_then(Value::as_i64);
        if best(conflict.local) > best(conflict.server) { Resolution::TakeLocal } else { Resolution::TakeServer }
    });
    // 3. A WASM plugin, run in a sandbox: stock counts add up both devices' deltas.
    ensure!(Path::new(INVENTORY_WASM).exists(), "{INVENTORY_WASM} is missing: run ./scripts/build-plugins.sh first");
    let items: Arc<dyn MergePolicy> = Arc::new(converge_wasm::PluginEngine::new()?.load_file(INVENTORY_WASM.as_ref())?);

    // Two devices of one user. Every device registers the same policies: a policy is part of how
    // replicas converge.
    let auth: Arc<dyn AuthProvider> = Arc::new(StaticToken(token));
    let device = |name: &str| -> Result<Engine> {
        let store = converge_sqlite::SqliteStore::open(dir.path().join(format!("{name}.db")))?;
        let engine = Engine::builder(Box::new(store))
            .api(converge_connect::connect(&url, auth.clone())?)
            .policy("notes", notes.clone())
            .policy("scores", scores.clone())
            .policy("items", items.clone())
            .build()?;
        Ok(engine)
    };
    let (phone, laptop) = (device("phone")?, device("laptop")?);

    let note = conflict(
        (&phone, &laptop),
        "notes",
        json!({"title": "groceries", "body": "milk\neggs\nbread\nbutter"}),
        json!({"body": "oat milk\neggs\nbread\nbutter"}),
        json!({"body": "milk\neggs\nbread\nsalted butter"}),
    )
    .await?;
    expect(note, json!({"title": "groceries", "body": "oat milk\neggs\nbread\nsalted butter"}))?;

    let score = conflict(
        (&phone, &laptop),
        "scores",
        json!({"player": "alice", "best": 80}),
        json!({"best": 95}),
        json!({"best": 120}),
    )
    .await?;
    expect(score, json!({"player": "alice", "best": 120}))?;

    let item = conflict(
        (&phone, &laptop),
        "items",
        json!({"sku": "bolt-m6", "qty": 10}),
        json!({"qty": 7}),
        json!({"qty": 8}),
    )
    .await?;
    expect(item, json!({"sku": "bolt-m6", "qty": 5}))?;

    println!("\nall three conflicts settled as their policies must settle them");
    Ok(())
}

/// Both devices hold `start`; offline, each edits it. The phone syncs first, so the laptop's edit
/// meets a record that changed since it read it: a conflict, which the laptop's policy for
/// `entity` settles. Prints each step; returns the record both devices end with.
async fn conflict(
    (phone, laptop): (&Engine, &Engine),
    entity: &str,
    start: Value,
    on_phone: Value,
    on_laptop: Value,
) -> Result<Value> {
    let id = phone.create(entity, fields(&start))?.record_id;
    phone.sync_once().await?;
    laptop.sync_once().await?;
    println!("\n{entity}: both devices hold {start}");

    phone.patch(entity, &id, fields(&on_phone))?;
    laptop.patch(entity, &id, fields(&on_laptop))?;
    println!("  phone writes   {on_phone}");
    println!("  laptop writes  {on_laptop}");

    phone.sync_once().await?; // the phone's edit reaches the server first,
    laptop.sync_once().await?; // so the laptop's conflicts: its policy settles it and sends the result;
    phone.sync_once().await?; // the phone pulls the settled record.

    let c = laptop.journal()?.into_iter().rfind(|c| c.record_id == id).context("the laptop met no conflict")?;
    let notice = if c.reason.is_empty() { String::new() } else { format!(" ({})", c.reason) };
    println!("  conflict       on {}: policy {} answers {}{notice}", c.fields.join(", "), c.policy, c.outcome);

    let settled = phone.get(entity, &id)?.context("the phone lost the record")?.fields;
    let on_laptop = laptop.get(entity, &id)?.context("the laptop lost the record")?.fields;
    ensure!(settled == on_laptop, "the devices disagree: phone {settled:?}, laptop {on_laptop:?}");
    let settled = Value::Object(settled);
    println!("  settled        {settled}  (on both devices)");
    Ok(settled)
}

/// Fails (so the program exits non-zero) unless the settled record is what the policy must give.
fn expect(settled: Value, must: Value) -> Result<()> {
    ensure!(settled == must, "settled as {settled}, but the policy must give {must}");
    Ok(())
}

fn fields(v: &Value) -> Fields {
    v.as_object().cloned().unwrap_or_default()
}

// --- The sync server. An app talks to one that runs elsewhere (`converge serve`); the example
// --- starts its own on loopback, so that it runs on its own.

/// Starts the sync server (HTTP on a port the OS picks) on a SQLite file in `dir`; returns its URL
/// and a token for the user alice of the tenant acme.
async fn start_server(dir: &Path) -> Result<(String, String)> {
    let store = converge_server::SqliteServerStore::open(&dir.join("server.db"))?;
    let service = Arc::new(converge_server::SyncService::new(Arc::new(store), Default::default()));
    let auth = Arc::new(converge_server::JwtAuth::new(b"example-secret"));
    let token = auth.issue("acme", "alice", Duration::from_secs(3600))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = converge_http::server::router(service, auth, Default::default());
    tokio::spawn(converge_http::server::serve(listener, app, std::future::pending()));
    Ok((url, token))
}
