//! `converge client`: a device store driven from the shell. Only `sync` touches the network.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand};
use converge_core::store::{ConflictRecord, OutboxOp};
use converge_core::{Choice, Engine, ErrorClass, Fields, MetricsReport, RecordView, SyncApi, SyncStatus, WorkerConfig};
use converge_sqlite::{Key, SqliteStore};
use serde_json::json;

/// Options shared by the client commands.
#[derive(Args)]
pub(crate) struct ClientArgs {
    /// The device store file (created if absent).
    #[arg(long, env = "CONVERGE_DB", default_value = "converge-device.db")]
    db: PathBuf,
    /// The file holding the device store's encryption key (SQLCipher): its contents, one
    /// trailing newline trimmed, are a passphrase, or 64 hex digits for a raw key. A new store
    /// is created encrypted. Without it, the key is taken from CONVERGE_DB_KEY when set.
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,
    /// The sync server's URL: http(s)://host:port for HTTP JSON, grpc(s)://host:port for gRPC.
    #[arg(long, env = "CONVERGE_SERVER", default_value = "http://127.0.0.1:7878")]
    server: String,
    /// The bearer token (make one with `converge token`); needed by `sync` only.
    #[arg(long, env = "CONVERGE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print one JSON document instead of text for people.
    #[arg(long, global = true)]
    json: bool,
    /// The merge policy of an entity: ENTITY=field_merge|lww|server_authoritative, or
    /// ENTITY=path/to/plugin.wasm (repeatable; without one, every conflict waits for review).
    /// The device store remembers it for later commands; ENTITY=review forgets it.
    #[arg(long = "policy", value_parser = parse_policy)]
    policies: Vec<(String, String)>,
    #[command(subcommand)]
    command: ClientCommand,
}

#[derive(Subcommand)]
enum ClientCommand {
    /// Create a record, or patch it if it exists (`null` removes a field).
    Put {
        /// The entity type, e.g. notes.
        entity: String,
        /// The record id (any id you choose; `new` makes a UUIDv7).
        id: String,
        /// The fields as a JSON object.
        fields: String,
    },
    /// Delete a record.
    Delete {
        /// The entity type.
        entity: String,
        /// The record id.
        id: String,
    },
    /// Show one record with its sync state.
    Get {
        /// The entity type.
        entity: String,
        /// The record id.
        id: String,
    },
    /// List the records of an entity type.
    List {
        /// The entity type.
        entity: String,
    },
    /// Run one full sync cycle: push the whole outbox, pull to the end of the feed.
    Sync,
    /// Keep syncing in the background, as an app does: a cycle at start, then whenever the
    /// server announces a change (live), or on every poll where it announces none, backing off
    /// after failures; prints each status change until Ctrl-C.
    Watch {
        /// How often to sync also without a trigger (writes by other commands on this store,
        /// others' changes where the server offers no notices): 90s, 15m, 1h.
        #[arg(long, default_value = "60s", value_parser = crate::duration::parse)]
        poll: Duration,
    },
    /// Show the sync status.
    Status {
        /// Also show the sync metrics: outbox depth, success rate, conflict rate per entity,
        /// time to converge, retries.
        #[arg(long)]
        metrics: bool,
    },
    /// List the held changes: dead letters (refused for good or failed too often) and changes
    /// the server refused as invalid (edit the record to correct one).
    Held,
    /// Send a held change again.
    Retry {
        /// The op id (see `held`).
        op_id: uuid::Uuid,
    },
    /// Drop a held change; it stays in the journal.
    Discard {
        /// The op id (see `held`).
        op_id: uuid::Uuid,
    },
    /// List the conflicts waiting for a decision.
    Conflicts,
    /// Settle a conflict.
    Resolve {
        /// The conflict id (see `conflicts`).
        id: i64,
        /// Keep the server's values (yours stay in the journal).
        #[arg(long, group = "choice")]
        accept_server: bool,
        /// Send your values again on top of the server's version.
        #[arg(long, group = "choice")]
        keep_local: bool,
        /// Write these fields (a JSON object) instead.
        #[arg(long, group = "choice")]
        merged: Option<String>,
    },
    /// Show the conflict journal: every settled conflict and the values that lost.
    Journal,
    /// Change the store's encryption key (the current one from --key-file or CONVERGE_DB_KEY;
    /// none for a plain store). Everything is kept, pending changes too.
    Rekey {
        /// The file holding the new key.
        #[arg(long, value_name = "PATH", group = "new_key")]
        new_key_file: Option<PathBuf>,
        /// Store it unencrypted from now on.
        #[arg(long, group = "new_key")]
        decrypt: bool,
    },
}

/// The store key from `--key-file`, else from CONVERGE_DB_KEY; none when neither is given.
fn store_key(key_file: Option<&std::path::Path>) -> Result<Option<Key>> {
    let text = match key_file {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("cannot read the key file {}", path.display()))?
        }
        None => match std::env::var("CONVERGE_DB_KEY") {
            Ok(text) => text,
            Err(_) => return Ok(None),
        },
    };
    Ok(Some(Key::parse(&text).context("the store key")?))
}

fn parse_policy(s: &str) -> Result<(String, String), String> {
    let (entity, name) =
        s.split_once('=').ok_or_else(|| format!("{s:?}: write ENTITY=POLICY, e.g. notes=field_merge"))?;
    if converge_policies::builtin(name).is_none() && !name.ends_with(".wasm") && name != FORGET {
        return Err(format!(
            "unknown policy {name:?}; built in: {}, or the path of a .wasm plugin (or {FORGET} to forget one)",
            converge_policies::BUILTINS.join(", ")
        ));
    }
    Ok((entity.to_owned(), name.to_owned()))
}

/// A progress line on stderr for a running sync cycle, from the status's progress: the push
/// as a count of the ops waiting, then the records pulled. Only on a terminal.
fn show_progress(engine: &Engine) -> (tokio::task::JoinHandle<()>, indicatif::ProgressBar) {
    let bar = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr_with_hz(5));
    bar.set_style(indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed}]").expect("a valid template"));
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut watch = engine.watch_status();
    let shown = bar.clone();
    let task = tokio::spawn(async move {
        while watch.changed().await.is_ok() {
            let Some(p) = watch.borrow().progress else { continue };
            let pushed =
                if p.to_push > 0 { format!("pushed {}/{}", p.pushed.min(p.to_push), p.to_push) } else { String::new() };
            let pulled = if p.pulled > 0 { format!("pulled {}", p.pulled) } else { String::new() };
            let sep = if pushed.is_empty() || pulled.is_empty() { "" } else { ", " };
            shown.set_message(format!("syncing: {pushed}{sep}{pulled}"));
        }
    });
    (task, bar)
}

fn parse_fields(s: &str) -> Result<Fields> {
    match serde_json::from_str::<serde_json::Value>(s) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => bail!("the fields must be a JSON object, like '{{\"title\": \"hello\"}}'"),
        Err(e) => bail!("the fields are not valid JSON ({e}); pass an object like '{{\"title\": \"hello\"}}'"),
    }
}

/// A `--policy` value that forgets the entity's remembered policy (every conflict waits for review).
const FORGET: &str = "review";
/// Where the device store keeps the CLI's policies.
const POLICIES_KEY: &str = "converge-cli.policies";

/// Opens the engine on the device store with its policies: those the store remembers, updated by
/// this command's `--policy` values, which are remembered in turn once each has loaded.
pub(crate) fn open_engine(
    db: &std::path::Path,
    key: Option<Key>,
    api: Option<Arc<dyn SyncApi>>,
    policies: &[(String, String)],
) -> Result<Engine> {
    let options = converge_sqlite::Options { key, ..converge_sqlite::Options::default() };
    let mut store = SqliteStore::open_with(db, options)
        .with_context(|| format!("cannot open the device store {}", db.display()))?;
    let mut remembered: BTreeMap<String, String> = match store.setting(POLICIES_KEY)? {
        Some(text) => serde_json::from_str(&text)
            .context("the device's remembered policies are unreadable; give them again with --policy")?,
        None => BTreeMap::new(),
    };
    for (entity, spec) in policies {
        if spec == FORGET {
            remembered.remove(entity);
        } else if spec.ends_with(".wasm") {
            // Kept as an absolute path, so later commands find it from any folder.
            let path = std::fs::canonicalize(spec).unwrap_or_else(|_| PathBuf::from(spec));
            remembered.insert(entity.clone(), path.display().to_string());
        } else {
            remembered.insert(entity.clone(), spec.clone());
        }
    }
    let mut loaded = Vec::new();
    for (entity, spec) in &remembered {
        loaded.push((entity, crate::policy::load_policy_for(entity, spec)?));
    }
    if !policies.is_empty() {
        store.set_setting(POLICIES_KEY, Some(&serde_json::to_string(&remembered)?))?;
    }
    let mut b = Engine::builder(Box::new(store));
    if let Some(api) = api {
        b = b.api(api);
    }
    for (entity, policy) in loaded {
        b = b.policy(entity, policy);
    }
    Ok(b.build()?)
}

pub(crate) async fn run(args: ClientArgs) -> Result<()> {
    let key = store_key(args.key_file.as_deref())?;
    if let ClientCommand::Rekey { new_key_file, decrypt } = &args.command {
        let new = match (new_key_file, decrypt) {
            (Some(path), _) => store_key(Some(path))?,
            (None, true) => None,
            (None, false) => bail!("give the new key with --new-key-file PATH, or --decrypt"),
        };
        SqliteStore::rekey(&args.db, key.as_ref(), new.as_ref())
            .with_context(|| format!("cannot re-key the device store {}", args.db.display()))?;
        let what = if new.is_some() { "encrypted with the new key" } else { "stored unencrypted" };
        let out = Output { json: args.json };
        out.line(
            json!({"rekeyed": args.db.display().to_string(), "encrypted": new.is_some()}),
            &format!("{} is now {what}", args.db.display()),
        );
        return Ok(());
    }
    let api = match &args.command {
        ClientCommand::Sync | ClientCommand::Watch { .. } => {
            let token = args.token.clone().ok_or_else(|| {
                anyhow!(
                    "no token: pass --token or set CONVERGE_TOKEN (make one with `converge token --tenant T --user U`)"
                )
            })?;
            let auth = Arc::new(converge_core::StaticToken(token));
            Some(converge_connect::connect(&args.server, auth).context("bad --server URL")?)
        }
        _ => None,
    };
    let engine = open_engine(&args.db, key, api, &args.policies)?;
    let out = Output { json: args.json };
    match args.command {
        ClientCommand::Put { entity, id, fields } => {
            let fields = parse_fields(&fields)?;
            let view = if id == "new" {
                engine.create(&entity, fields)?
            } else if engine.get(&entity, &id)?.is_some_and(|r| !r.deleted) {
                engine.patch(&entity, &id, fields)?
            } else {
                engine.put(&entity, &id, fields)?
            };
            out.record(&view);
        }
        ClientCommand::Delete { entity, id } => {
            engine.delete(&entity, &id)?;
            out.line(json!({"deleted": {"entity": entity, "record_id": id}}), &format!("deleted {entity}/{id}"));
        }
        ClientCommand::Get { entity, id } => match engine.get(&entity, &id)? {
            Some(v) => out.record(&v),
            None => bail!("no record {entity}/{id} on this device"),
        },
        ClientCommand::List { entity } => {
            let list = engine.list(&entity)?;
            if out.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                println!("no {entity} records on this device");
            } else {
                for v in &list {
                    println!("{:<38} {:<8} v{:<4} {}", v.record_id, state_name(v), v.version, compact(&v.fields));
                }
            }
        }
        ClientCommand::Sync => sync(&engine, &out).await?,
        ClientCommand::Watch { poll } => watch(&engine, &out, poll).await?,
        ClientCommand::Status { metrics } => {
            if metrics {
                out.metrics(&engine.status(), &engine.metrics());
            } else {
                out.status(&engine.status());
            }
        }
        ClientCommand::Held => out.held(&engine.held_ops()?),
        ClientCommand::Retry { op_id } => {
            engine.retry_op(op_id)?;
            out.line(json!({"retried": op_id}), &format!("{op_id} goes out with the next `sync`"));
        }
        ClientCommand::Discard { op_id } => {
            engine.discard_op(op_id)?;
            out.line(json!({"discarded": op_id}), &format!("{op_id} discarded; its values are in the journal"));
        }
        ClientCommand::Conflicts => out.conflicts(&engine.conflicts()?, "no conflicts waiting"),
        ClientCommand::Journal => out.conflicts(&engine.journal()?, "the journal is empty"),
        ClientCommand::Rekey { .. } => unreachable!("re-keyed before the store was opened"),
        ClientCommand::Resolve { id, accept_server, keep_local, merged } => {
            let choice = match (accept_server, keep_local, merged) {
                (true, _, _) => Choice::AcceptServer,
                (_, true, _) => Choice::KeepLocal,
                (_, _, Some(m)) => Choice::Merged(parse_fields(&m)?),
                _ => bail!("say how to settle it: --accept-server, --keep-local or --merged '{{...}}'"),
            };
            engine.resolve(id, choice)?;
            out.line(json!({"resolved": id}), &format!("conflict {id} settled; run `sync` to send any change"));
        }
    }
    Ok(())
}

async fn sync(engine: &Engine, out: &Output) -> Result<()> {
    let progress = (!out.json && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| show_progress(engine));
    let result = engine.sync_once().await;
    if let Some((task, bar)) = progress {
        task.abort();
        bar.finish_and_clear();
    }
    let report = result.map_err(|e| {
        let hint = match e.class() {
            ErrorClass::Unauthorized => {
                "; the server refused the token: make a new one with `converge token` and pass it with --token"
            }
            _ => "",
        };
        anyhow!("sync did not finish: {e} (the next `sync` resumes where this one stopped){hint}")
    })?;
    let status = engine.status();
    if out.json {
        println!("{}", serde_json::to_string_pretty(&json!({"report": report, "status": status}))?);
    } else {
        println!(
            "synced: {} accepted, {} conflicts, {} refused in {} batch(es); {} record(s) pulled",
            report.accepted, report.conflicts, report.rejected, report.batches, report.pulled
        );
        if status.open_conflicts > 0 {
            println!("{} conflict(s) wait for you: `converge client conflicts`", status.open_conflicts);
        }
        if status.needs_action + status.dead_letters > 0 {
            println!(
                "{} change(s) need your action and {} are dead letters; see `converge client held`",
                status.needs_action, status.dead_letters
            );
        }
    }
    Ok(())
}

async fn watch(engine: &Engine, out: &Output, poll: Duration) -> Result<()> {
    if poll.is_zero() {
        bail!("--poll must be at least 1s");
    }
    let mut status = engine.watch_status();
    // Other `converge client` commands may write this store meanwhile, and no signal announces
    // their writes: poll also while subscribed.
    let config = WorkerConfig { poll_every: Some(poll), poll_while_live: true, ..WorkerConfig::default() };
    let worker = engine.start_worker(config)?;
    if !out.json {
        eprintln!("syncing in the background; Ctrl-C stops");
    }
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            changed = status.changed() => {
                if changed.is_err() {
                    break;
                }
                let s = status.borrow_and_update().clone();
                if out.json {
                    println!("{}", serde_json::to_string(&s)?);
                } else {
                    let phase = serde_json::to_value(s.phase).ok().and_then(|v| v["phase"].as_str().map(str::to_owned));
                    let notices = serde_json::to_value(s.notices).ok().and_then(|v| v.as_str().map(str::to_owned));
                    println!(
                        "{:<12} {:<8} pending {:<6} conflicts {:<4} needs action {:<4} dead letters {:<4}{}",
                        phase.unwrap_or_default(),
                        notices.unwrap_or_default(),
                        s.pending,
                        s.open_conflicts,
                        s.needs_action,
                        s.dead_letters,
                        s.last_error.as_ref().map(|e| format!(" last error: {}", e.message)).unwrap_or_default()
                    );
                }
            }
        }
    }
    worker.stop().await;
    Ok(())
}

struct Output {
    json: bool,
}

fn state_name(v: &RecordView) -> String {
    if v.deleted {
        "deleted".into()
    } else {
        serde_json::to_value(v.state).ok().and_then(|s| s.as_str().map(str::to_owned)).unwrap_or_default()
    }
}

fn compact(f: &Fields) -> String {
    serde_json::Value::Object(f.clone()).to_string()
}

pub(crate) fn ago(ms: Option<u64>) -> String {
    let now = converge_core::Clock::now_ms(&converge_core::SystemClock);
    match ms {
        None => "never".into(),
        Some(t) => format!("{:.1}s ago", now.saturating_sub(t) as f64 / 1000.0),
    }
}

impl Output {
    fn line(&self, doc: serde_json::Value, text: &str) {
        if self.json {
            println!("{doc}");
        } else {
            println!("{text}");
        }
    }

    fn record(&self, v: &RecordView) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            println!("{}/{}  [{}]  server version {}", v.entity, v.record_id, state_name(v), v.version);
            println!("{}", serde_json::to_string_pretty(&v.fields).unwrap_or_default());
        }
    }

    fn status(&self, s: &SyncStatus) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(s).unwrap_or_default());
            return;
        }
        println!(
            "phase:            {}",
            serde_json::to_value(s.phase).ok().and_then(|v| v["phase"].as_str().map(str::to_owned)).unwrap_or_default()
        );
        println!("pending changes:  {}", s.pending);
        if let Some(t) = s.oldest_pending_ms {
            println!("oldest pending:   written {}", ago(Some(t)));
        }
        println!("needs action:     {}", s.needs_action);
        println!("dead letters:     {}", s.dead_letters);
        println!("open conflicts:   {}", s.open_conflicts);
        println!("last sync:        {}", ago(s.last_success_ms));
        if let Some(e) = &s.last_error {
            println!("last error:       {}", e.message);
        }
    }

    fn metrics(&self, s: &SyncStatus, m: &MetricsReport) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(&json!({"status": s, "metrics": m})).unwrap_or_default());
            return;
        }
        self.status(s);
        let ms = |v: Option<u64>| v.map_or("-".to_owned(), |v| format!("{v} ms"));
        println!("outbox depth:     {}", m.outbox_depth);
        println!(
            "sync cycles:      {} ({} succeeded)",
            m.cycles,
            m.success_rate.map_or("-".to_owned(), |r| format!("{:.1} %", r * 100.0))
        );
        println!("time to converge: median {}, p90 {}", ms(m.median_converge_ms), ms(m.p90_converge_ms));
        for (entity, rate) in &m.conflict_rate {
            println!("conflict rate:    {entity} {:.1} %", rate * 100.0);
        }
        let retries: Vec<String> = m.retries.iter().enumerate().map(|(i, n)| format!("{i}:{n}")).collect();
        println!("retries:          {}", if retries.is_empty() { "-".to_owned() } else { retries.join(" ") });
    }

    fn held(&self, ops: &[OutboxOp]) {
        if self.json {
            let list: Vec<_> = ops
                .iter()
                .map(|o| {
                    json!({"op_id": o.op_id, "entity": o.entity, "record_id": o.record_id, "op": o.op,
                           "state": o.state, "attempts": o.attempts, "error": o.last_error})
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&list).unwrap_or_default());
            return;
        }
        if ops.is_empty() {
            println!("no held changes");
        }
        for o in ops {
            println!(
                "{}  {}/{}  {:?}  {}  after {} attempt(s): {}",
                o.op_id,
                o.entity,
                o.record_id,
                o.op,
                o.state.as_str(),
                o.attempts,
                o.last_error.as_deref().unwrap_or("-")
            );
        }
    }

    fn conflicts(&self, list: &[ConflictRecord], empty: &str) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(list).unwrap_or_default());
            return;
        }
        if list.is_empty() {
            println!("{empty}");
        }
        for c in list {
            println!(
                "#{} {}/{}  fields {:?}  policy {}  {}",
                c.id, c.entity, c.record_id, c.fields, c.policy, c.outcome
            );
            println!("    yours:  {}", compact(&c.local));
            println!(
                "    server: {} (version {}{})",
                compact(&c.server),
                c.server_version,
                if c.server_deleted { ", deleted" } else { "" }
            );
            if !c.losing.is_empty() {
                println!("    kept in the journal (lost): {}", compact(&c.losing));
            }
            if !c.reason.is_empty() {
                println!("    {}", c.reason);
            }
        }
    }
}
