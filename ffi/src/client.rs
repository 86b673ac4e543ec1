//! `ConvergeClient`: the one object an app holds: a device store, its sync engine, the worker
//! and the listeners, on a small tokio runtime of its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use converge_core::{Choice, Engine, EngineConfig, MergePolicy, WorkerConfig, WorkerHandle};
use converge_sqlite::{Key, Options as StoreOptions, SqliteStore};
use tokio::runtime::{Handle, Runtime};

use crate::auth::{ForeignAuth, TokenProvider};
use crate::error::{ConvergeError, Result};
use crate::listen::{self, ListenerHandle, RecordListener, StatusListener, Stop};
use crate::types::{ClientOptions, Conflict, HeldOp, Record, Resolution, SyncReport, SyncStatus, parse_fields};

/// A device's Converge client: open it once per store file and share it. Every method may be
/// called from any thread; the ones that touch the store block for the store's work (a local
/// write takes well under a millisecond), `sync_now` is async. After `close()` every method
/// fails with code `closed`.
#[derive(uniffi::Object)]
pub struct ConvergeClient {
    open: Mutex<Option<Open>>,
}

struct Open {
    engine: Engine,
    runtime: Runtime,
    worker: Option<WorkerHandle>,
    worker_config: WorkerConfig,
    listeners: Vec<Weak<Stop>>,
}

#[uniffi::export]
impl ConvergeClient {
    /// Opens (or creates) the store at `path` and a client for the server at `server_url`
    /// (`http(s)://host:port` or `grpc(s)://host:port`). Connects on first sync, not here: an
    /// app opens its store offline too.
    #[uniffi::constructor]
    pub fn open(
        path: String,
        server_url: String,
        tokens: Arc<dyn TokenProvider>,
        options: ClientOptions,
    ) -> Result<Arc<ConvergeClient>> {
        // The options first: a wrong one costs no runtime, store or connection.
        let key = options.encryption_key.as_deref().map(Key::parse).transpose()?;
        let policies = policies(&options.policies)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("converge")
            .enable_all()
            .build()
            .map_err(|e| ConvergeError::internal(format!("cannot start the client's runtime: {e}")))?;
        let auth = Arc::new(ForeignAuth(tokens));
        let api = {
            // The gRPC client makes its lazy channel on the runtime it will run on.
            let _inside = runtime.enter();
            converge_connect::connect(&server_url, auth.clone()).map_err(|e| ConvergeError::invalid(e.to_string()))?
        };
        let mut config = EngineConfig::default();
        if let Some(n) = options.batch_size {
            config.batch_size = n as usize;
        }
        if let Some(n) = options.pull_limit {
            config.pull_limit = n;
        }
        let store = SqliteStore::open_with(&path, StoreOptions { key, ..StoreOptions::default() })?;
        let mut builder = Engine::builder(Box::new(store)).api(api).auth(auth).config(config);
        for (entity, policy) in policies {
            builder = builder.policy(&entity, policy);
        }
        let engine = builder.build()?;
        let open = Open { engine, runtime, worker: None, worker_config: worker_config(&options), listeners: vec![] };
        Ok(Arc::new(ConvergeClient { open: Mutex::new(Some(open)) }))
    }

    /// This device's id (made when the store was created).
    pub fn device_id(&self) -> Result<String> {
        Ok(self.engine()?.device_id().to_owned())
    }

    /// Creates a record with a new id; `json` is a JSON object.
    pub fn create(&self, entity: String, json: String) -> Result<Record> {
        let fields = parse_fields(&json)?;
        Ok(self.engine()?.create(&entity, fields)?.into())
    }

    /// Writes a record whole (creating it when new); `json` is a JSON object.
    pub fn put(&self, entity: String, id: String, json: String) -> Result<Record> {
        let fields = parse_fields(&json)?;
        Ok(self.engine()?.put(&entity, &id, fields)?.into())
    }

    /// Changes some fields of a record; a field set to `null` is removed.
    pub fn patch(&self, entity: String, id: String, json: String) -> Result<Record> {
        let fields = parse_fields(&json)?;
        Ok(self.engine()?.patch(&entity, &id, fields)?.into())
    }

    /// Deletes a record.
    pub fn delete(&self, entity: String, id: String) -> Result<()> {
        Ok(self.engine()?.delete(&entity, &id)?)
    }

    /// One record, also a deleted one (`deleted` set); `None` if the device never had it.
    pub fn get(&self, entity: String, id: String) -> Result<Option<Record>> {
        Ok(self.engine()?.get(&entity, &id)?.map(Record::from))
    }

    /// The records of an entity that are not deleted, by id.
    pub fn list(&self, entity: String) -> Result<Vec<Record>> {
        Ok(self.engine()?.list(&entity)?.into_iter().map(Record::from).collect())
    }

    /// The conflicts waiting for the user.
    pub fn conflicts(&self) -> Result<Vec<Conflict>> {
        Ok(self.engine()?.conflicts()?.into_iter().map(Conflict::from).collect())
    }

    /// Settles an open conflict; a settlement that changes the record is synced like a write.
    pub fn resolve(&self, conflict_id: i64, resolution: Resolution) -> Result<()> {
        let choice = match resolution {
            Resolution::AcceptServer => Choice::AcceptServer,
            Resolution::KeepLocal => Choice::KeepLocal,
            Resolution::Merged { json } => Choice::Merged(parse_fields(&json)?),
        };
        Ok(self.engine()?.resolve(conflict_id, choice)?)
    }

    /// Settled conflicts, newest last: what each policy or the user decided, and what lost.
    pub fn journal(&self) -> Result<Vec<Conflict>> {
        Ok(self.engine()?.journal()?.into_iter().map(Conflict::from).collect())
    }

    /// Ops held back from sync (refused as invalid, or dead letters).
    pub fn held_ops(&self) -> Result<Vec<HeldOp>> {
        Ok(self.engine()?.held_ops()?.into_iter().map(HeldOp::from).collect())
    }

    /// Sends a held op again at the next sync.
    pub fn retry_op(&self, op_id: String) -> Result<()> {
        Ok(self.engine()?.retry_op(op_id_of(&op_id)?)?)
    }

    /// Drops a held op; the record returns to the server's state (the op goes to the journal).
    pub fn discard_op(&self, op_id: String) -> Result<()> {
        Ok(self.engine()?.discard_op(op_id_of(&op_id)?)?)
    }

    /// The sync status now.
    pub fn status(&self) -> Result<SyncStatus> {
        Ok(self.engine()?.status().into())
    }

    /// The client's metrics as JSON object text (outbox depth, cycles, latencies, per-entity
    /// counts): ids and counts only, never record contents.
    pub fn metrics_json(&self) -> Result<String> {
        let report = self.engine()?.metrics();
        serde_json::to_string(&report).map_err(|e| ConvergeError::internal(format!("metrics: {e}")))
    }

    /// Runs one sync cycle now (push the outbox, pull the feed) and says what it did. A refused
    /// token is refreshed once through the token provider and the cycle run again. Safe from
    /// several threads at once: cycles run one after another.
    pub async fn sync_now(&self) -> Result<SyncReport> {
        let (engine, rt) = self.engine_and_runtime()?;
        match rt.spawn(async move { engine.sync_once().await }).await {
            Ok(done) => Ok(done?.into()),
            Err(e) if e.is_cancelled() => Err(ConvergeError::closed()),
            Err(_) => Err(ConvergeError::internal("the sync cycle failed inside")),
        }
    }

    /// Starts the sync worker: it syncs after local writes, on the server's change notices,
    /// when the network comes back, and with backoff after failures. Starting it again does
    /// nothing.
    pub fn start(&self) -> Result<()> {
        let mut open = self.lock();
        let open = open.as_mut().ok_or_else(ConvergeError::closed)?;
        if open.worker.is_none() {
            let _inside = open.runtime.enter();
            open.worker = Some(open.engine.start_worker(open.worker_config)?);
        }
        Ok(())
    }

    /// Stops the sync worker (a cycle in progress ends first); nothing written is lost.
    pub fn stop(&self) -> Result<()> {
        let (worker, rt) = {
            let mut open = self.lock();
            let open = open.as_mut().ok_or_else(ConvergeError::closed)?;
            (open.worker.take(), open.runtime.handle().clone())
        };
        if let Some(worker) = worker {
            block_on(&rt, worker.stop());
        }
        Ok(())
    }

    /// Tells the worker the network changed (from `NWPathMonitor`): back online syncs at once.
    pub fn network_changed(&self, online: bool) -> Result<()> {
        self.engine()?.network_changed(online);
        Ok(())
    }

    /// Tells the worker the user signed in again: sync resumes from `needs_auth`.
    pub fn auth_changed(&self) -> Result<()> {
        self.engine()?.auth_changed();
        Ok(())
    }

    /// Asks the running worker for a cycle soon (without waiting for it).
    pub fn request_sync(&self) -> Result<()> {
        self.engine()?.sync_now();
        Ok(())
    }

    /// Calls `listener` with the status now and on each change, until the handle is cancelled
    /// or dropped.
    pub fn on_status(&self, listener: Arc<dyn StatusListener>) -> Result<Arc<ListenerHandle>> {
        let (engine, rt, stop) = self.listener_parts()?;
        Ok(Arc::new(listen::status(&engine, rt, stop, listener)))
    }

    /// Calls `listener` once per changed record (of `entity`, or of every entity when `None`),
    /// until the handle is cancelled or dropped.
    pub fn on_record_change(
        &self,
        entity: Option<String>,
        listener: Arc<dyn RecordListener>,
    ) -> Result<Arc<ListenerHandle>> {
        let (engine, rt, stop) = self.listener_parts()?;
        Ok(Arc::new(listen::records(&engine, rt, stop, entity, listener)))
    }

    /// Stops the worker and every listener and closes the store. Calling it again does nothing;
    /// dropping the client closes it too.
    pub fn close(&self) {
        let Some(open) = self.lock().take() else { return };
        let Open { engine, runtime, worker, listeners, .. } = open;
        for stop in listeners.iter().filter_map(Weak::upgrade) {
            stop.set();
        }
        if let Some(worker) = worker {
            block_on(runtime.handle(), worker.stop());
        }
        drop(engine);
        // Never blocks, also when the last reference goes on one of the runtime's own threads.
        runtime.shutdown_background();
    }
}

/// Changes the encryption key of the store at `path`, which no client may have open: from
/// `old_key` (`None`: a plain store) to `new_key` (`None`: store it unencrypted). Everything is
/// kept, pending changes too; a crash leaves the old file or the new one, whole.
#[uniffi::export]
pub fn rekey_store(path: String, old_key: Option<String>, new_key: Option<String>) -> Result<()> {
    let old = old_key.as_deref().map(Key::parse).transpose()?;
    let new = new_key.as_deref().map(Key::parse).transpose()?;
    Ok(SqliteStore::rekey(&path, old.as_ref(), new.as_ref())?)
}

impl ConvergeClient {
    /// The engine behind the client, for Rust code that embeds this crate (benchmarks, tests);
    /// not part of the foreign API.
    pub fn engine(&self) -> Result<Engine> {
        self.lock().as_ref().map(|o| o.engine.clone()).ok_or_else(ConvergeError::closed)
    }

    fn lock(&self) -> MutexGuard<'_, Option<Open>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn engine_and_runtime(&self) -> Result<(Engine, Handle)> {
        self.lock().as_ref().map(|o| (o.engine.clone(), o.runtime.handle().clone())).ok_or_else(ConvergeError::closed)
    }

    fn listener_parts(&self) -> Result<(Engine, Handle, Arc<Stop>)> {
        let mut open = self.lock();
        let open = open.as_mut().ok_or_else(ConvergeError::closed)?;
        let stop = Arc::new(Stop::default());
        open.listeners.retain(|s| s.strong_count() > 0);
        open.listeners.push(Arc::downgrade(&stop));
        Ok((open.engine.clone(), open.runtime.handle().clone(), stop))
    }
}

impl Drop for ConvergeClient {
    fn drop(&mut self) {
        self.close();
    }
}

/// Runs `f` to the end on `rt` from any thread: directly from a thread outside the runtime,
/// through a helper thread from inside one (where blocking the runtime's thread is not allowed).
fn block_on<F: Future<Output = ()> + Send + 'static>(rt: &Handle, f: F) {
    if Handle::try_current().is_err() {
        rt.block_on(f);
    } else {
        let rt = rt.clone();
        let _ = std::thread::spawn(move || rt.block_on(f)).join();
    }
}

fn op_id_of(op_id: &str) -> Result<uuid::Uuid> {
    uuid::Uuid::parse_str(op_id).map_err(|_| ConvergeError::invalid("an op id is a UUID"))
}

/// The policy of each entity: a built-in by name, or a WASM plugin by a path ending in `.wasm`
/// (all plugins on one plugin engine).
fn policies(specs: &HashMap<String, String>) -> Result<Vec<(String, Arc<dyn MergePolicy>)>> {
    #[cfg(feature = "wasm")]
    let mut plugins: Option<converge_wasm::PluginEngine> = None;
    let mut loaded = Vec::with_capacity(specs.len());
    for (entity, spec) in specs {
        converge_core::model::validate_entity(entity)?;
        let policy: Arc<dyn MergePolicy> = if spec.ends_with(".wasm") {
            #[cfg(feature = "wasm")]
            {
                let failed =
                    |e: converge_wasm::Error| ConvergeError::invalid(format!("cannot load the plugin {spec}: {e}"));
                let engine = match &mut plugins {
                    Some(engine) => engine,
                    None => plugins.insert(converge_wasm::PluginEngine::new().map_err(failed)?),
                };
                Arc::new(engine.load_file(std::path::Path::new(spec)).map_err(failed)?)
            }
            #[cfg(not(feature = "wasm"))]
            return Err(ConvergeError::invalid(format!(
                "{spec}: this build has no WASM plugin support (converge-ffi's `wasm` feature)"
            )));
        } else {
            converge_policies::builtin(spec).ok_or_else(|| {
                ConvergeError::invalid(format!(
                    "unknown policy {spec:?}: give a built-in ({}) or the path of a .wasm plugin",
                    converge_policies::BUILTINS.join(", ")
                ))
            })?
        };
        loaded.push((entity.clone(), policy));
    }
    Ok(loaded)
}

/// The worker's settings from the options.
fn worker_config(options: &ClientOptions) -> WorkerConfig {
    let mut config = WorkerConfig::default();
    if let Some(ms) = options.poll_every_ms {
        config.poll_every = Some(Duration::from_millis(ms));
    }
    if let Some(ms) = options.backoff_base_ms {
        config.backoff_base = Duration::from_millis(ms);
    }
    if let Some(ms) = options.backoff_cap_ms {
        config.backoff_cap = Duration::from_millis(ms);
    }
    config
}
