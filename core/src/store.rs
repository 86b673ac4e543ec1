//! `LocalStore`: the device's records, outbox, sync state and conflicts, and the call contract a
//! store implementation keeps. The engine holds the logic; a store only reads and writes rows.

use std::collections::BTreeMap;

use serde::Serialize;
use uuid::Uuid;

use crate::engine::Metrics;
use crate::error::Result;
use crate::hlc::Hlc;
use crate::model::{CheckMode, Fields, Op, Version};
use crate::wire::FieldClock;

/// One record on the device: the last confirmed server state and the local view on top of it.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalRecord {
    /// The entity.
    pub entity: String,
    /// The record id.
    pub record_id: String,
    /// The last confirmed server version (0: not on the server yet).
    pub server_version: Version,
    /// The last confirmed server fields.
    pub server_fields: Fields,
    /// Whether the server has it deleted.
    pub server_deleted: bool,
    /// What the app sees: server state with pending ops applied.
    pub fields: Fields,
    /// Whether the app sees it deleted.
    pub deleted: bool,
    /// Outbox ops of this record (pending, in flight or failed).
    pub pending: u32,
    /// Open conflicts of this record.
    pub conflicts: u32,
    /// Ops of this record held for the app (dead letters or needing action); they hold later ops
    /// back.
    pub failed: u32,
}

/// Where an outbox op stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OpState {
    /// Waiting to be sent.
    Pending,
    /// Sent (or about to be) in the batch named by `batch_id`; resent with the same key.
    InFlight,
    /// Dead letter: refused for good by the server, or failed more often than the engine's
    /// `max_attempts`; waits for the app (retry, edit or discard) and holds later ops of its
    /// record back.
    DeadLetter,
    /// Refused as invalid (e.g. too large, a check mode the server does not allow): the user must
    /// change it; holds later ops of its record back like a failed op.
    NeedsAction,
}

impl OpState {
    /// Whether the op is held for the app (dead letter or needs action) instead of being sent.
    pub fn is_held(self) -> bool {
        matches!(self, OpState::DeadLetter | OpState::NeedsAction)
    }

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            OpState::Pending => "pending",
            OpState::InFlight => "in_flight",
            OpState::DeadLetter => "dead_letter",
            OpState::NeedsAction => "needs_action",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<OpState> {
        match s {
            "pending" => Some(OpState::Pending),
            "in_flight" => Some(OpState::InFlight),
            "dead_letter" => Some(OpState::DeadLetter),
            "needs_action" => Some(OpState::NeedsAction),
            _ => None,
        }
    }
}

/// One pending mutation in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxOp {
    /// Position in the outbox (assigned by the store on insert).
    pub seq: i64,
    /// The stable op id.
    pub op_id: Uuid,
    /// The entity.
    pub entity: String,
    /// The record id.
    pub record_id: String,
    /// create, update or delete.
    pub op: Op,
    /// The changed fields.
    pub patch: Fields,
    /// The server version the change was made on.
    pub base_version: Version,
    /// The write's HLC.
    pub hlc: Hlc,
    /// The check mode of the entity's policy.
    pub check: CheckMode,
    /// Where it stands.
    pub state: OpState,
    /// The batch (idempotency key) it was sent in.
    pub batch_id: Option<String>,
    /// Sends that ended without a final answer.
    pub attempts: u32,
    /// The last error, as code and message (never record contents).
    pub last_error: Option<String>,
    /// When it was written (Unix ms).
    pub created_ms: u64,
}

/// A conflict: open until settled, then a journal entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConflictRecord {
    /// Assigned by the store.
    pub id: i64,
    /// The entity.
    pub entity: String,
    /// The record id.
    pub record_id: String,
    /// The op that conflicted.
    pub op_id: Uuid,
    /// What the op did.
    pub op: Op,
    /// The confirmed server fields the op was made on (as the device knew them).
    pub base: Fields,
    /// The op's patch: the local intent.
    pub local: Fields,
    /// The server's fields at the conflict.
    pub server: Fields,
    /// The server's version at the conflict.
    pub server_version: Version,
    /// Whether the server had the record deleted.
    pub server_deleted: bool,
    /// The fields in conflict.
    pub fields: Vec<String>,
    /// The HLC of the local intent (its latest write); none in conflicts recorded before it was
    /// kept (those are never offered to a policy registered later).
    pub local_hlc: Option<Hlc>,
    /// Per server field, the version and HLC of its last change, as the conflict saw it.
    pub server_meta: BTreeMap<String, FieldClock>,
    /// The policy that handled it.
    pub policy: String,
    /// `open`, or how it was settled (`take_server`, `take_local`, `merged`).
    pub outcome: String,
    /// Values that lost, kept so nothing a user wrote disappears silently.
    pub losing: Fields,
    /// Why it needs review, or a notice for the UI.
    pub reason: String,
    /// When the conflict arose (Unix ms).
    pub created_ms: u64,
    /// When it was settled.
    pub resolved_ms: Option<u64>,
    /// The sync cycle it arose in.
    pub trace_id: String,
}

impl ConflictRecord {
    /// Whether it still waits for a decision.
    pub fn is_open(&self) -> bool {
        self.outcome == "open"
    }
}

/// The device's sync state.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeviceState {
    /// This device's id (made when the store was created).
    pub device_id: String,
    /// The highest HLC persisted (monotonic across restarts together with the outbox's HLCs).
    pub hlc: Option<Hlc>,
    /// The pull cursor.
    pub cursor: Option<String>,
    /// When a sync cycle last completed (Unix ms).
    pub last_success_ms: Option<u64>,
    /// The last sync error: the status's [`StatusError`](crate::engine::StatusError) as JSON
    /// (older stores kept the message alone).
    pub last_error: Option<String>,
    /// The sync metrics, kept across restarts.
    pub metrics: Metrics,
}

/// Counts over the outbox and conflicts, for the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Ops pending or in flight.
    pub pending: u64,
    /// Ops that need the user to change them (a validation refusal).
    pub needs_action: u64,
    /// Dead letters: ops refused for good or failed too often.
    pub dead_letters: u64,
    /// When the oldest pending op was written.
    pub oldest_pending_ms: Option<u64>,
    /// Open conflicts.
    pub open_conflicts: u64,
}

/// Reads. Each call sees a consistent snapshot.
pub trait StoreRead {
    /// The device's sync state.
    fn device_state(&self) -> Result<DeviceState>;
    /// The highest HLC among outbox ops.
    fn max_outbox_hlc(&self) -> Result<Option<Hlc>>;
    /// One record, also a deleted one.
    fn record(&self, entity: &str, record_id: &str) -> Result<Option<LocalRecord>>;
    /// The records of an entity that the app sees (not deleted), ordered by record id.
    fn list(&self, entity: &str) -> Result<Vec<LocalRecord>>;
    /// The outbox ops of one record, in order.
    fn record_ops(&self, entity: &str, record_id: &str) -> Result<Vec<OutboxOp>>;
    /// The ops in flight, grouped by batch (oldest key first) and in order within a batch.
    fn in_flight(&self) -> Result<Vec<OutboxOp>>;
    /// Up to `limit` pending ops that are the first outbox op of their record: those of the
    /// entity types in `first` before the others, each group in outbox order.
    fn next_ops(&self, limit: usize, first: &[String]) -> Result<Vec<OutboxOp>>;
    /// Counts for the status (may scan the outbox; called once per sync cycle).
    fn summary(&self) -> Result<Summary>;
    /// When the oldest op not held was written (cheap: the head of the outbox).
    fn oldest_pending_ms(&self) -> Result<Option<u64>>;
    /// The held ops (needs action, dead letter), in outbox order (cheap: a partial index).
    fn held_ops(&self) -> Result<Vec<OutboxOp>>;
    /// One outbox op by its op id.
    fn op(&self, op_id: Uuid) -> Result<Option<OutboxOp>>;
    /// Conflicts: the open ones, or (journal) the settled ones, newest last.
    fn conflicts(&self, open: bool) -> Result<Vec<ConflictRecord>>;
    /// One conflict.
    fn conflict(&self, id: i64) -> Result<Option<ConflictRecord>>;
    /// Whether a re-sync from the start is in progress (some confirmed records not seen yet).
    fn snapshot_active(&self) -> Result<bool>;
    /// A number that changes whenever a write transaction commits to the store, this store's
    /// own or another connection's (another process on the same file, say). Read in a
    /// transaction, it is the number as of that transaction's start: its own writes do not count.
    fn data_version(&self) -> Result<u64>;
}

/// Writes, inside one transaction.
pub trait StoreTx: StoreRead {
    /// Inserts or replaces a record.
    fn put_record(&mut self, record: &LocalRecord) -> Result<()>;
    /// Inserts a record unless one with its key exists (also a deleted one); `true` if inserted.
    fn insert_new_record(&mut self, record: &LocalRecord) -> Result<bool>;
    /// Removes a record that never reached the server.
    fn remove_record(&mut self, entity: &str, record_id: &str) -> Result<()>;
    /// Appends an op; returns its seq.
    fn insert_op(&mut self, op: &OutboxOp) -> Result<i64>;
    /// Rewrites an op (by seq).
    fn update_op(&mut self, op: &OutboxOp) -> Result<()>;
    /// Removes an op (by seq).
    fn remove_op(&mut self, seq: i64) -> Result<()>;
    /// The server accepted the op `seq` of a record at `version`. When that op is the record's
    /// only outbox op, the record has no open conflict or held op, and `version` is the one right
    /// after its confirmed version (the server applied the op on the state the device holds),
    /// the view is exactly the server's state at `version`: the view
    /// becomes the confirmed state at `version` (no fields are read or written), the op is
    /// removed and `true` returned. Otherwise nothing changes and `false` is returned, for the
    /// caller to take the general path.
    fn confirm_sole_op(&mut self, entity: &str, record_id: &str, seq: i64, version: u64) -> Result<bool>;
    /// Marks ops (by seq) in flight in the batch `batch_id`.
    fn mark_in_flight(&mut self, seqs: &[i64], batch_id: &str) -> Result<()>;
    /// Inserts a conflict; returns its id.
    fn insert_conflict(&mut self, conflict: &ConflictRecord) -> Result<i64>;
    /// Rewrites a conflict (by id).
    fn update_conflict(&mut self, conflict: &ConflictRecord) -> Result<()>;
    /// Writes the device's sync state.
    fn set_device_state(&mut self, state: &DeviceState) -> Result<()>;
    /// Starts a re-sync from the start: every confirmed live record is "not seen yet". Kept on
    /// disk, so a re-sync interrupted by a crash goes on where it stopped.
    fn snapshot_begin(&mut self) -> Result<()>;
    /// The re-sync's feed mentioned this record.
    fn snapshot_seen(&mut self, entity: &str, record_id: &str) -> Result<()>;
    /// Takes up to `limit` records the finished re-sync never mentioned (removed on the server).
    fn snapshot_take(&mut self, limit: usize) -> Result<Vec<(String, String)>>;
}

/// The device's local store. The engine calls it from one thread at a time (under its lock):
/// the app's threads for reads and writes, tokio's blocking pool for sync work, never the app's
/// async runtime from a sync cycle. A call may block (it is disk I/O). None of the methods may
/// be left out; `checkpoint` may do nothing where the store has no log to fold.
pub trait LocalStore: StoreRead + Send {
    /// Runs `f` in one transaction: committed if `f` returns `Ok`, rolled back otherwise. A crash
    /// at any point leaves either all of `f`'s writes or none. `f` runs exactly once: an
    /// implementation never runs it again (a busy database is waited for before `f` starts, or
    /// its error returned), so `f` may keep what it computes in its captures.
    fn transact(&mut self, f: &mut dyn FnMut(&mut dyn StoreTx) -> Result<()>) -> Result<()>;

    /// Folds the write-ahead log into the database file without blocking writers; called by the
    /// engine when sync is idle, so checkpoints stay off the write path.
    fn checkpoint(&mut self) -> Result<()>;
}
