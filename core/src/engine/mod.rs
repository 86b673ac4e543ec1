//! The client engine: local reads and writes on the device store, sync cycles, status.

mod ack;
mod batch;
mod changes;
mod counters;
mod held;
mod listen;
mod metrics;
mod resolve;
mod status;
mod sync;
mod worker;
mod write;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use tokio::sync::watch;

pub use changes::RecordChange;
pub use metrics::{EntityCounts, Metrics, MetricsReport};
pub use resolve::Choice;
pub use status::{Notices, Phase, RecordState, RecordView, StatusError, SyncProgress, SyncReport, SyncStatus};
pub use worker::{WorkerConfig, WorkerHandle, backoff_delay};

use crate::api::{AuthProvider, SyncApi};
use crate::error::{Error, Result};
use crate::hlc::{Clock, HlcClock, IdSource, SystemClock, V7Ids};
use crate::policy::{MergePolicy, ReviewPolicy};
use crate::store::{ConflictRecord, LocalRecord, LocalStore, OpState, Summary};

/// Tunables of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Most ops in one push batch (one op per record per batch).
    pub batch_size: usize,
    /// Most bytes of patches in one push batch, to stay under the server's body limit (1 MiB).
    pub max_batch_bytes: usize,
    /// Page size of a pull.
    pub pull_limit: u32,
    /// An op whose sends failed with a server error more often than this becomes a dead letter.
    pub max_attempts: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { batch_size: 50, max_batch_bytes: 768 << 10, pull_limit: 500, max_attempts: 10 }
    }
}

/// Builds an [`Engine`].
pub struct EngineBuilder {
    store: Box<dyn LocalStore>,
    api: Option<Arc<dyn SyncApi>>,
    auth: Option<Arc<dyn AuthProvider>>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdSource>,
    config: EngineConfig,
    policies: HashMap<String, Arc<dyn MergePolicy>>,
    default_policy: Arc<dyn MergePolicy>,
    critical: Vec<String>,
}

/// How urgently an entity type's changes go to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Priority {
    /// In outbox order with everything else (the default).
    #[default]
    Normal,
    /// Pushed before normal changes, in batches of their own, which a server under pressure
    /// admits first when it lists the type as critical (`converge serve --critical`).
    Critical,
}

impl EngineBuilder {
    /// Sets how urgently `entity`'s changes are pushed (default [`Priority::Normal`]). A record's
    /// changes still go in the order they were made, one per batch.
    pub fn priority(mut self, entity: &str, priority: Priority) -> Self {
        self.critical.retain(|e| e != entity);
        if priority == Priority::Critical {
            self.critical.push(entity.to_owned());
        }
        self
    }

    /// Where fresh tokens come from after the server refuses one (the same provider the
    /// transport reads its token from). Without it, a refused token means `needs_auth`.
    pub fn auth(mut self, auth: Arc<dyn AuthProvider>) -> Self {
        self.auth = Some(auth);
        self
    }

    /// The sync API to push to and pull from (a transport client, or the service in-process).
    pub fn api(mut self, api: Arc<dyn SyncApi>) -> Self {
        self.api = Some(api);
        self
    }

    /// The wall clock (tests and simulations pass their own).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The source of new ids (tests and simulations pass a seeded one).
    pub fn ids(mut self, ids: Arc<dyn IdSource>) -> Self {
        self.ids = ids;
        self
    }

    /// Tunables.
    pub fn config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// Registers the merge policy of an entity type.
    pub fn policy(mut self, entity: &str, policy: Arc<dyn MergePolicy>) -> Self {
        self.policies.insert(entity.to_owned(), policy);
        self
    }

    /// The policy for entities without one of their own (default: every conflict open for review).
    pub fn default_policy(mut self, policy: Arc<dyn MergePolicy>) -> Self {
        self.default_policy = policy;
        self
    }

    /// Opens the engine: reads the device state and the outbox counts.
    pub fn build(self) -> Result<Engine> {
        if self.config.batch_size == 0 || self.config.pull_limit == 0 || self.config.max_attempts == 0 {
            return Err(Error::InvalidInput("batch_size, pull_limit and max_attempts must be at least 1".into()));
        }
        let device = self.store.device_state()?;
        let last = [device.hlc.clone(), self.store.max_outbox_hlc()?].into_iter().flatten().max();
        let hlc = HlcClock::new(&device.device_id, last);
        let summary = self.store.summary()?;
        // The last cycle's outcome survives a restart: a device that needed auth still does.
        let last_error = device.last_error.as_deref().map(StatusError::parse_stored);
        let status = SyncStatus {
            phase: last_error.as_ref().map_or(Phase::Idle, StatusError::phase),
            pending: summary.pending,
            needs_action: summary.needs_action,
            dead_letters: summary.dead_letters,
            oldest_pending_ms: summary.oldest_pending_ms,
            open_conflicts: summary.open_conflicts,
            last_success_ms: device.last_success_ms,
            last_error,
            progress: None,
            notices: Notices::Off,
        };
        let (status_tx, _) = watch::channel(status);
        Ok(Engine {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    store: changes::Recorder::new(self.store),
                    hlc,
                    summary,
                    metrics: device.metrics,
                }),
                api: self.api,
                auth: self.auth,
                worker: worker::Signals::default(),
                clock: self.clock,
                ids: self.ids,
                device_id: device.device_id,
                policies: RwLock::new(self.policies),
                default_policy: self.default_policy,
                status: status_tx,
                cycle: tokio::sync::Mutex::new(()),
                batch_limit: std::sync::atomic::AtomicUsize::new(self.config.batch_size),
                critical: self.critical,
                config: self.config,
            }),
        })
    }
}

/// The client engine. Cheap to clone; all clones share one store.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    api: Option<Arc<dyn SyncApi>>,
    auth: Option<Arc<dyn AuthProvider>>,
    worker: worker::Signals,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdSource>,
    device_id: String,
    policies: RwLock<HashMap<String, Arc<dyn MergePolicy>>>,
    default_policy: Arc<dyn MergePolicy>,
    status: watch::Sender<SyncStatus>,
    cycle: tokio::sync::Mutex<()>,
    /// The batch size in use: the configured one, halved when the server refuses batches as too
    /// large.
    batch_limit: std::sync::atomic::AtomicUsize,
    /// The entity types pushed first, in batches of their own.
    critical: Vec<String>,
    config: EngineConfig,
}

/// A record's view; a record with refused ops is `needs_action` when one of them needs the user
/// to change it, else `failed`.
fn view_of(store: &dyn LocalStore, r: &LocalRecord) -> Result<RecordView> {
    let mut view = RecordView::from(r);
    if r.failed > 0 && store.record_ops(&r.entity, &r.record_id)?.iter().any(|o| o.state == OpState::NeedsAction) {
        view.state = RecordState::NeedsAction;
    }
    Ok(view)
}

/// How one transaction changed the records' counters (outbox ops, failed ops, open conflicts).
#[derive(Debug, Default, Clone, Copy)]
struct Delta {
    pending: i64,
    failed: i64,
    conflicts: i64,
}

impl Delta {
    /// Counts the difference between a record's counters before and after a change.
    fn track(&mut self, before: (u32, u32, u32), after: &LocalRecord) {
        self.pending += i64::from(after.pending) - i64::from(before.0);
        self.failed += i64::from(after.failed) - i64::from(before.1);
        self.conflicts += i64::from(after.conflicts) - i64::from(before.2);
    }
}

/// A record's counters, to diff with [`Delta::track`].
fn counters(r: &LocalRecord) -> (u32, u32, u32) {
    (r.pending, r.failed, r.conflicts)
}

struct State {
    store: changes::Recorder,
    hlc: HlcClock,
    summary: Summary,
    metrics: Metrics,
}

impl Engine {
    /// Starts building an engine over a local store.
    pub fn builder(store: Box<dyn LocalStore>) -> EngineBuilder {
        EngineBuilder {
            store,
            api: None,
            auth: None,
            clock: Arc::new(SystemClock),
            ids: Arc::new(V7Ids),
            config: EngineConfig::default(),
            policies: HashMap::new(),
            default_policy: Arc::new(ReviewPolicy),
            critical: Vec::new(),
        }
    }

    /// This device's id.
    pub fn device_id(&self) -> &str {
        &self.inner.device_id
    }

    /// Registers (or replaces) the merge policy of an entity type.
    pub fn register_policy(&self, entity: &str, policy: Arc<dyn MergePolicy>) {
        let mut map = self.inner.policies.write().unwrap_or_else(|e| e.into_inner());
        map.insert(entity.to_owned(), policy);
    }

    fn policy_for(&self, entity: &str) -> Arc<dyn MergePolicy> {
        let map = self.inner.policies.read().unwrap_or_else(|e| e.into_inner());
        map.get(entity).cloned().unwrap_or_else(|| self.inner.default_policy.clone())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One record as the app sees it (also a deleted one, with `deleted` set).
    pub fn get(&self, entity: &str, record_id: &str) -> Result<Option<RecordView>> {
        let st = self.lock();
        st.store.record(entity, record_id)?.as_ref().map(|r| view_of(&*st.store, r)).transpose()
    }

    /// The records of an entity the app sees (not deleted), ordered by record id.
    pub fn list(&self, entity: &str) -> Result<Vec<RecordView>> {
        let st = self.lock();
        st.store.list(entity)?.iter().map(|r| view_of(&*st.store, r)).collect()
    }

    /// Conflicts waiting for the user.
    pub fn conflicts(&self) -> Result<Vec<ConflictRecord>> {
        self.lock().store.conflicts(true)
    }

    /// The conflict journal: every settled conflict, with its outcome and losing values.
    pub fn journal(&self) -> Result<Vec<ConflictRecord>> {
        self.lock().store.conflicts(false)
    }

    /// The pull cursor: where the next pull continues in the server's change feed.
    pub fn sync_cursor(&self) -> Result<Option<String>> {
        Ok(self.lock().store.device_state()?.cursor)
    }

    /// The current sync status.
    pub fn status(&self) -> SyncStatus {
        self.inner.status.borrow().clone()
    }

    /// A stream of status changes for the UI.
    pub fn watch_status(&self) -> watch::Receiver<SyncStatus> {
        self.inner.status.subscribe()
    }

    /// The sync metrics: outbox depth, success rate, conflict rate per entity type, time to
    /// converge, retries. Counted since the store was created.
    pub fn metrics(&self) -> MetricsReport {
        let st = self.lock();
        st.metrics.report(st.summary.pending)
    }

    /// Refreshes the counts from the store and publishes them.
    fn refresh_summary(&self) -> Result<()> {
        let summary = {
            let mut st = self.lock();
            st.summary = st.store.summary()?;
            st.summary
        };
        self.publish(summary);
        Ok(())
    }

    /// Adds the change in counts that one transaction made, and publishes the result. Held ops
    /// are recounted when their number changed (rare, and cheap: a partial index).
    fn apply_delta(&self, st: &mut MutexGuard<'_, State>, d: Delta) -> Result<()> {
        if d.failed != 0 {
            let held = st.store.held_ops()?;
            st.summary.needs_action = held.iter().filter(|o| o.state == OpState::NeedsAction).count() as u64;
            st.summary.dead_letters = held.len() as u64 - st.summary.needs_action;
        }
        let s = &mut st.summary;
        s.pending = s.pending.saturating_add_signed(d.pending - d.failed);
        s.open_conflicts = s.open_conflicts.saturating_add_signed(d.conflicts);
        st.summary.oldest_pending_ms = if st.summary.pending == 0 { None } else { st.store.oldest_pending_ms()? };
        self.publish(st.summary);
        Ok(())
    }

    fn publish(&self, s: Summary) {
        self.inner.status.send_if_modified(|status| {
            let before = status.clone();
            status.pending = s.pending;
            status.needs_action = s.needs_action;
            status.dead_letters = s.dead_letters;
            status.oldest_pending_ms = s.oldest_pending_ms;
            status.open_conflicts = s.open_conflicts;
            *status != before
        });
    }

    fn set_notices(&self, notices: Notices) {
        self.inner.status.send_if_modified(|s| {
            let changed = s.notices != notices;
            s.notices = notices;
            changed
        });
    }

    fn set_phase(&self, phase: Phase) {
        self.inner.status.send_if_modified(|s| {
            let changed = s.phase != phase;
            s.phase = phase;
            changed
        });
    }
}
