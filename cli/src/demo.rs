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
use crate::serve::{Bounds, DEV_SECRET, sqlite_store, start};

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
    let mut rules = Rules::default();
    rules.pins.insert("orders".into(), converge_core::CheckMode::Record);
    let server = start(
        sqlite_store(&dir.join("converge-server.db"))?,
        "127.0.0.1:0".parse()?,
        None,
        DEV_SECRET,
        rules,
        None,
        Bounds::default(),
    )
    .await?;
    println!("   server listening on {}", server.url());
    let token = JwtAuth::new(DEV_SECRET.as_bytes()).issue("demo", "alice", std::time::Duration::from_secs(3600))?;
    let device = |name: &'static str| -> Result<Device> {
        let api = Arc::new(HttpClient::new(&server.url(), token.clone())?);
        let policies = [("notes", "field_merge"), ("flags", "lww"), ("orders", "server_authoritative")]
            .map(|(e, p)| (e.to_owned(), p.to_owned()));
        Ok(Device { name, engine: open_engine(&dir.join(format!("{name}.db")), None, Some(api), &policies)? })
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

    step(5, "Offline again, both edit the SAME note 'trip'. Notes use the field-merge policy.");
    phone.engine.patch(
        "notes",
        &ids[1],
        obj(json!({"title": "trip to Lisbon", "body": "day 1: ?\nday 2: ?\nday 3: ?\nday 4: ?"})),
    )?;
    phone.sync().await?;
    laptop.sync().await?;
    phone.engine.patch(
        "notes",
        &ids[1],
        obj(json!({"title": "trip to Lisbon!", "body": "day 1: Lisbon\nday 2: ?\nday 3: ?\nday 4: ?"})),
    )?;
    std::thread::sleep(std::time::Duration::from_millis(5));
    laptop.engine.patch(
        "notes",
        &ids[1],
        obj(json!({"title": "trip to Porto", "body": "day 1: ?\nday 2: ?\nday 3: ?\nday 4: Porto"})),
    )?;
    phone.sync().await?;
    laptop.sync().await?;
    phone.sync().await?;
    println!("   The body lines merge; for the title, the later edit (the laptop's) wins. The UI shows a banner:");
    for j in laptop.engine.journal()?.iter().filter(|j| j.outcome == "merged") {
        println!("   [banner] {}", j.reason);
        println!(
            "   the versions before the merge stay in the journal: {}",
            serde_json::Value::Object(j.losing.clone())
        );
    }
    phone.show("notes")?;

    step(6, "A status: flags use last-writer-wins. Both set it offline; the laptop sets it last.");
    let flag = phone.engine.create("flags", obj(json!({"label": "groceries", "state": "todo"})))?.record_id;
    phone.sync().await?;
    laptop.sync().await?;
    phone.engine.patch("flags", &flag, obj(json!({"state": "doing"})))?;
    std::thread::sleep(std::time::Duration::from_millis(5));
    laptop.engine.patch("flags", &flag, obj(json!({"state": "done"})))?;
    println!("   The laptop syncs FIRST, the phone (older write) second: arrival order does not matter.");
    laptop.sync().await?;
    phone.sync().await?;
    laptop.sync().await?;
    let state = phone.engine.get("flags", &flag)?.context("the flag")?.fields["state"].clone();
    ensure!(state == json!("done"), "the later write must win");
    println!("   state = {state} on both: the latest write wins, whatever order the writes arrive in.");

    step(7, "An order: orders are server-authoritative, and the server pins them to the 'record' check.");
    let order =
        phone.engine.create("orders", obj(json!({"item": "coffee beans", "qty": 1, "status": "new"})))?.record_id;
    phone.sync().await?;
    laptop.sync().await?;
    phone.engine.patch("orders", &order, obj(json!({"status": "paid"})))?;
    laptop.engine.patch("orders", &order, obj(json!({"qty": 3})))?;
    phone.sync().await?;
    laptop.sync().await?;
    let review = laptop.engine.conflicts()?;
    let c = review.first().context("the demo expected an order to need review")?;
    println!(
        "   needs review: the laptop wanted {} but the server has {} ({})",
        serde_json::Value::Object(c.local.clone()),
        serde_json::Value::Object(c.server.clone()),
        c.reason
    );
    laptop.show("orders")?;
    println!("   Alice decides on the laptop: keep her quantity. That is a new change on the server's version.");
    laptop.engine.resolve(c.id, Choice::KeepLocal)?;
    laptop.sync().await?;
    phone.sync().await?;
    phone.show("orders")?;

    step(8, "Check: both devices and the server hold the same records.");
    let api = HttpClient::new(&server.url(), token.clone())?;
    let all: Vec<(&str, &String)> =
        ids.iter().map(|id| ("notes", id)).chain([("flags", &flag), ("orders", &order)]).collect();
    for (entity, id) in &all {
        let on_server = api.record(entity, id).await?;
        let a = phone.engine.get(entity, id)?.context("phone lost a record")?;
        let b = laptop.engine.get(entity, id)?.context("laptop lost a record")?;
        ensure!(a.fields == on_server.fields && b.fields == on_server.fields, "devices did not converge on {id}");
        ensure!(a.version == on_server.version && b.version == on_server.version, "versions differ on {id}");
    }
    println!("   converged: {} records identical on the phone, the laptop and the server.", all.len());
    println!("   The laptop's conflict journal: every settlement and the values that lost:");
    for j in laptop.engine.journal()? {
        println!(
            "   #{} {}/{} policy {} -> {} (lost: {})",
            j.id,
            j.entity,
            j.record_id,
            j.policy,
            j.outcome,
            serde_json::Value::Object(j.losing)
        );
    }
    server.stop().await?;
    println!("\nDone. Try it yourself: `converge serve`, then `converge client --help`.");
    Ok(())
}
