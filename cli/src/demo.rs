//! `converge demo`: a server and two devices that edit offline, sync, conflict and converge,
//! narrated step by step for a newcomer.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use clap::Args;
use converge_core::check::Rules;
use converge_core::{Choice, Engine, Fields, SyncApi};
use converge_http::client::HttpClient;
use converge_server::JwtAuth;
use serde_json::json;

use crate::client::open_engine;
use crate::serve::{DEV_SECRET, start};

/// Options of `converge demo`.
#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Keep the demo's database files in this folder (default: a temporary folder, removed after).
    #[arg(long)]
    dir: Option<PathBuf>,
}

struct Device {
    name: &'static str,
    engine: Engine,
}

impl Device {
    fn show(&self, entity: &str) -> Result<()> {
        let s = self.engine.status();
        println!(
            "   {:<7} | {} pending, {} open conflict(s) | last sync: {}",
            self.name,
            s.pending,
            s.open_conflicts,
            crate::client::ago(s.last_success_ms)
        );
        for r in self.engine.list(entity)? {
            let state = serde_json::to_value(r.state)?;
            println!(
                "   {:<7} |   {} v{} [{}] {}",
                "",
                &r.record_id,
                r.version,
                state.as_str().unwrap_or(""),
                serde_json::Value::Object(r.fields)
            );
        }
        Ok(())
    }

    async fn sync(&self) -> Result<()> {
        let r = self.engine.sync_once().await?;
        println!(
            "   {} syncs: {} change(s) accepted, {} conflict(s), {} record(s) pulled",
            self.name, r.accepted, r.conflicts, r.pulled
        );
        Ok(())
    }
}

fn step(n: u32, text: &str) {
    println!("\n{n}. {text}");
}

fn obj(v: serde_json::Value) -> Fields {
    v.as_object().cloned().unwrap_or_default()
}

pub(crate) async fn run(args: DemoArgs) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => tmp.path().to_path_buf(),
    };
    println!("Converge demo: one sync server, two devices (a phone and a laptop) of the same user.");
    println!("Files live in {}", dir.display());

    step(1, "Start the sync server on the embedded SQLite store.");
    let server = start(&dir.join("converge-server.db"), "127.0.0.1:0".parse()?, DEV_SECRET, Rules::default()).await?;
    println!("   server listening on {}", server.url());
    let token = JwtAuth::new(DEV_SECRET.as_bytes()).issue("demo", "alice", std::time::Duration::from_secs(3600))?;
    let device = |name: &'static str| -> Result<Device> {
        let api = Arc::new(HttpClient::new(&server.url(), token.clone())?);
        Ok(Device { name, engine: open_engine(&dir.join(format!("{name}.db")), Some(api))? })
    };
    let phone = device("phone")?;
    let laptop = device("laptop")?;

    step(2, "The phone is offline. Alice writes three notes: each write is one local transaction, no network.");
    let ids: Vec<String> = ["groceries", "trip", "ideas"]
        .iter()
        .map(|t| Ok(phone.engine.create("notes", obj(json!({"title": t, "body": ""})))?.record_id))
        .collect::<Result<_>>()?;
    phone.show("notes")?;
    println!("   The notes are 'pending': they wait in the phone's outbox.");

    step(3, "The network is back. The phone pushes its outbox; the laptop pulls the change feed.");
    phone.sync().await?;
    laptop.sync().await?;
    phone.show("notes")?;
    laptop.show("notes")?;

    step(4, "Both go offline. The phone edits the title of 'groceries', the laptop its body: different fields.");
    phone.engine.patch("notes", &ids[0], obj(json!({"title": "groceries for Sunday"})))?;
    laptop.engine.patch("notes", &ids[0], obj(json!({"body": "milk, eggs, bread"})))?;
    phone.sync().await?;
    laptop.sync().await?;
    phone.sync().await?;
    println!("   Different fields merge on the server without a conflict:");
    phone.show("notes")?;
    laptop.show("notes")?;

    step(5, "Offline again, both change the SAME field: the title of 'trip'.");
    phone.engine.patch("notes", &ids[1], obj(json!({"title": "trip to Lisbon"})))?;
    laptop.engine.patch("notes", &ids[1], obj(json!({"title": "trip to Porto"})))?;
    phone.sync().await?;
    laptop.sync().await?;
    println!("   The phone synced first and won the field; the laptop's edit is a conflict, kept, not lost:");
    let conflicts = laptop.engine.conflicts()?;
    for c in &conflicts {
        println!(
            "   conflict #{} on {}/{} field(s) {:?}: laptop wanted {}, server has {}",
            c.id,
            c.entity,
            c.record_id,
            c.fields,
            serde_json::Value::Object(c.local.clone()),
            serde_json::Value::Object(c.server.clone())
        );
    }
    laptop.show("notes")?;
    let conflict = conflicts.first().context("the demo expected a conflict")?;

    step(
        6,
        "Alice settles it on the laptop with a merged value; that becomes a new change based on the server's version.",
    );
    laptop
        .engine
        .resolve(conflict.id, Choice::Merged(obj(json!({"title": "trip to Lisbon and Porto", "body": ""}))))?;
    laptop.sync().await?;
    phone.sync().await?;
    phone.show("notes")?;
    laptop.show("notes")?;

    step(7, "Check: both devices and the server hold the same records.");
    let api = HttpClient::new(&server.url(), token.clone())?;
    for id in &ids {
        let on_server = api.record("notes", id).await?;
        let a = phone.engine.get("notes", id)?.context("phone lost a record")?;
        let b = laptop.engine.get("notes", id)?.context("laptop lost a record")?;
        ensure!(a.fields == on_server.fields && b.fields == on_server.fields, "devices did not converge on {id}");
        ensure!(a.version == on_server.version && b.version == on_server.version, "versions differ on {id}");
    }
    println!("   converged: {} records identical on the phone, the laptop and the server.", ids.len());
    println!("   The journal keeps the settled conflict and the value that lost:");
    for j in laptop.engine.journal()? {
        println!("   #{} {} -> {} (lost: {})", j.id, j.record_id, j.outcome, serde_json::Value::Object(j.losing));
    }
    server.stop().await?;
    println!("\nDone. Try it yourself: `converge serve`, then `converge client --help`.");
    Ok(())
}
