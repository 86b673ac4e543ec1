//! Live sync: two devices run the background sync worker with polling off, so an edit on one
//! reaches the other only through the server's live change notice. Prints how long each took.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use converge_core::{AuthProvider, Engine, Fields, Notices, StaticToken, WorkerConfig};
use serde_json::{Value, json};
use tokio::time::{Instant, timeout};

/// How many edits to time, alternating between the devices.
const EDITS: usize = 7;
/// The time between edits, as between a person's edits. The server sends a subscriber at most
/// one notice per 50 ms (a burst of pushes is one notice), so edits closer together than that
/// wait for the next one.
const PAUSE: Duration = Duration::from_millis(100);
/// The longest an edit may take to show up on the other device.
const LIMIT: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (url, token) = start_server(dir.path()).await?;
    let auth: Arc<dyn AuthProvider> = Arc::new(StaticToken(token));
    let device = |name: &str| -> Result<Engine> {
        let store = converge_sqlite::SqliteStore::open(dir.path().join(format!("{name}.db")))?;
        Ok(Engine::builder(Box::new(store)).api(converge_connect::connect(&url, auth.clone())?).build()?)
    };
    let (phone, laptop) = (device("phone")?, device("laptop")?);

    // The worker syncs in the background: at once after a local write, and whenever a change
    // notice says that another device changed something. It never polls here.
    let never_poll = WorkerConfig { poll_every: None, ..Default::default() };
    let workers = [phone.start_worker(never_poll)?, laptop.start_worker(never_poll)?];
    for d in [&phone, &laptop] {
        until(d, |d| Ok(d.status().notices == Notices::Live)).await.context("the worker did not subscribe")?;
    }
    println!("phone and laptop: workers running, polling off, subscribed to change notices");

    let devices = [("phone", &phone), ("laptop", &laptop)];
    let mut took = Vec::new();
    for i in 1..=EDITS {
        // Odd edits go from the phone to the laptop, even ones back.
        let ((from, writer), (to, reader)) = (devices[(i + 1) % 2], devices[i % 2]);
        tokio::time::sleep(PAUSE).await;
        let title = json!(format!("edit {i}"));
        let written = Instant::now();
        writer.put("notes", "shared", fields(json!({ "title": title })))?;
        until(reader, |d| Ok(d.get("notes", "shared")?.is_some_and(|n| n.fields.get("title") == Some(&title))))
            .await
            .with_context(|| format!("edit {i} did not reach the {to} within {LIMIT:?}"))?;
        took.push(written.elapsed());
        println!("edit {i}: {from:<6} -> {to:<6} {:>7.1} ms", ms(written.elapsed()));
    }
    took.sort();
    println!("median: {:.1} ms over {EDITS} edits", ms(took[EDITS / 2]));

    for worker in workers {
        worker.stop().await; // finishes the cycle it is running
    }
    let (a, b) = (phone.get("notes", "shared")?, laptop.get("notes", "shared")?);
    ensure!(a.is_some() && a == b, "the devices disagree: {a:?} / {b:?}");
    println!("converged: both devices show {}", Value::Object(a.context("the note")?.fields));
    Ok(())
}

/// Waits until `check` holds for the device, looking again each time its sync status changes
/// (as a UI refreshes), for at most [`LIMIT`].
async fn until(device: &Engine, check: impl Fn(&Engine) -> Result<bool>) -> Result<()> {
    let mut status = device.watch_status();
    timeout(LIMIT, async {
        while !check(device)? {
            status.changed().await?;
        }
        Ok(())
    })
    .await
    .context("timed out")?
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn fields(v: Value) -> Fields {
    v.as_object().cloned().unwrap_or_default()
}

// --- The sync server. An app talks to one that runs elsewhere (`converge serve`); the example
// --- starts its own on loopback, so that it runs on its own.

/// Starts the sync server (HTTP on a port the OS picks, change notices as server-sent events) on
/// a SQLite file in `dir`; returns its URL and a token for the user alice of the tenant acme.
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
