//! The values that cross the boundary: records as JSON text with typed metadata, the sync
//! status, conflicts, held ops and options, each converted from core's types.

use std::collections::HashMap;

use converge_core::store::{ConflictRecord, OutboxOp};
use converge_core::{Fields, engine};

use crate::error::{ConvergeError, Result};

/// A record as the app sees it. `json` is the fields as a JSON object (with pending local
/// changes applied), for `Codable`; `{}` when deleted.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct Record {
    /// The entity, e.g. `notes`.
    pub entity: String,
    /// The record id.
    pub id: String,
    /// The last version the server confirmed (0: not on the server yet).
    pub version: u64,
    /// Its sync state.
    pub state: RecordState,
    /// Whether it is deleted (locally or on the server).
    pub deleted: bool,
    /// The fields as JSON object text.
    pub json: String,
}

/// A record's sync state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum RecordState {
    /// Equal to the server's state.
    Synced,
    /// Local changes wait to be acknowledged.
    Pending,
    /// A conflict waits for the user.
    Conflict,
    /// An op failed for good or too often; see `held_ops`.
    Failed,
    /// An op was refused as invalid; the user must change the record.
    NeedsAction,
}

impl From<engine::RecordView> for Record {
    fn from(v: engine::RecordView) -> Record {
        Record {
            json: fields_json(&v.fields),
            entity: v.entity,
            id: v.record_id,
            version: v.version,
            state: v.state.into(),
            deleted: v.deleted,
        }
    }
}

impl From<engine::RecordState> for RecordState {
    fn from(s: engine::RecordState) -> RecordState {
        match s {
            engine::RecordState::Synced => RecordState::Synced,
            engine::RecordState::Pending => RecordState::Pending,
            engine::RecordState::Conflict => RecordState::Conflict,
            engine::RecordState::Failed => RecordState::Failed,
            engine::RecordState::NeedsAction => RecordState::NeedsAction,
        }
    }
}

/// Fields as JSON object text.
pub(crate) fn fields_json(fields: &Fields) -> String {
    serde_json::to_string(fields).unwrap_or_else(|_| "{}".to_owned())
}

/// Fields from the app's JSON text: an object, or a typed error that says what is wrong
/// (without the values).
pub(crate) fn parse_fields(json: &str) -> Result<Fields> {
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(ConvergeError::invalid("the record's JSON is not an object")),
        Err(e) => Err(ConvergeError::invalid(format!(
            "the record's JSON does not parse: {}",
            converge_core::model::json_error_without_values(&e)
        ))),
    }
}

/// What the sync worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Phase {
    /// Nothing running.
    Idle,
    /// A sync cycle is running.
    Syncing,
    /// The last cycle could not reach the server.
    Offline,
    /// Waiting until `until_ms` (Unix ms) before the next attempt.
    BackingOff {
        /// When the next attempt is due.
        until_ms: u64,
    },
    /// The server refused the token and the provider could not refresh it: sign in again,
    /// then call `auth_changed`. Nothing is dropped.
    NeedsAuth,
    /// The last cycle stopped on an error that retrying will not fix.
    Failed,
}

/// How the device hears of others' changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum Notices {
    /// No worker runs: changes arrive when the app calls `sync_now`.
    Off,
    /// Subscribed to the server's change notices.
    Live,
    /// Polling: the server offers no notices, or the subscription is down.
    Polling,
}

/// The last error of a sync cycle.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct StatusError {
    /// The stable code (see [`ConvergeError`]).
    pub code: String,
    /// What happened (never record contents).
    pub message: String,
    /// How it is treated: `retryable`, `unauthorized`, `rejected` or `fatal`.
    pub error_class: String,
    /// When (Unix ms).
    pub at_ms: u64,
}

/// How far a running cycle is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct Progress {
    /// Ops waiting to be pushed when the cycle started.
    pub to_push: u64,
    /// Ops pushed and answered so far.
    pub pushed: u64,
    /// Records pulled so far.
    pub pulled: u64,
}

/// The overall sync status, for a status bar.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncStatus {
    /// What the worker is doing.
    pub phase: Phase,
    /// Ops not yet acknowledged by the server.
    pub pending: u64,
    /// Ops the server refused as invalid: the user must change them.
    pub needs_action: u64,
    /// Ops refused for good or failed too often: retry or discard them.
    pub dead_letters: u64,
    /// When the oldest unacknowledged op was written (Unix ms).
    pub oldest_pending_ms: Option<u64>,
    /// Conflicts waiting for the user.
    pub open_conflicts: u64,
    /// When a cycle last completed (Unix ms).
    pub last_success_ms: Option<u64>,
    /// The last cycle's error, cleared by a successful cycle.
    pub last_error: Option<StatusError>,
    /// How far the running cycle is; none between cycles.
    pub progress: Option<Progress>,
    /// Live or polling.
    pub notices: Notices,
}

fn class_name(c: converge_core::ErrorClass) -> &'static str {
    match c {
        converge_core::ErrorClass::Retryable => "retryable",
        converge_core::ErrorClass::Unauthorized => "unauthorized",
        converge_core::ErrorClass::Rejected => "rejected",
        converge_core::ErrorClass::Fatal => "fatal",
    }
}

impl From<engine::SyncStatus> for SyncStatus {
    fn from(s: engine::SyncStatus) -> SyncStatus {
        SyncStatus {
            phase: match s.phase {
                engine::Phase::Idle => Phase::Idle,
                engine::Phase::Syncing => Phase::Syncing,
                engine::Phase::Offline => Phase::Offline,
                engine::Phase::BackingOff { until_ms } => Phase::BackingOff { until_ms },
                engine::Phase::NeedsAuth => Phase::NeedsAuth,
                engine::Phase::Failed => Phase::Failed,
            },
            pending: s.pending,
            needs_action: s.needs_action,
            dead_letters: s.dead_letters,
            oldest_pending_ms: s.oldest_pending_ms,
            open_conflicts: s.open_conflicts,
            last_success_ms: s.last_success_ms,
            last_error: s.last_error.map(|e| StatusError {
                code: e.code.unwrap_or_else(|| "none".to_owned()),
                message: e.message,
                error_class: class_name(e.class).to_owned(),
                at_ms: e.at_ms,
            }),
            progress: s.progress.map(|p| Progress { to_push: p.to_push, pushed: p.pushed, pulled: p.pulled }),
            notices: match s.notices {
                engine::Notices::Off => Notices::Off,
                engine::Notices::Live => Notices::Live,
                engine::Notices::Polling => Notices::Polling,
            },
        }
    }
}

/// What one sync cycle did.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncReport {
    /// The cycle's trace id (for support: the server logs it too).
    pub trace_id: String,
    /// Batches sent.
    pub batches: u64,
    /// Ops the server applied.
    pub accepted: u64,
    /// Ops that conflicted.
    pub conflicts: u64,
    /// Ops refused for good.
    pub rejected: u64,
    /// Records pulled from the change feed.
    pub pulled: u64,
}

impl From<engine::SyncReport> for SyncReport {
    fn from(r: engine::SyncReport) -> SyncReport {
        SyncReport {
            trace_id: r.trace_id,
            batches: r.batches,
            accepted: r.accepted,
            conflicts: r.conflicts,
            rejected: r.rejected,
            pulled: r.pulled,
        }
    }
}

/// A conflict: open (waiting for `resolve`) or, in the journal, settled.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Conflict {
    /// Its id, for `resolve`.
    pub id: i64,
    /// The entity.
    pub entity: String,
    /// The record id.
    pub record_id: String,
    /// The fields in conflict.
    pub fields: Vec<String>,
    /// The local intent (the op's changed fields), JSON object text.
    pub local_json: String,
    /// The server's fields at the conflict, JSON object text.
    pub server_json: String,
    /// The fields the local change was made on, JSON object text.
    pub base_json: String,
    /// Whether the server had the record deleted.
    pub server_deleted: bool,
    /// The policy that handled it.
    pub policy: String,
    /// `open`, or how it was settled: `take_server`, `take_local`, `merged`.
    pub outcome: String,
    /// Values that lost, JSON object text: nothing a user wrote disappears silently.
    pub losing_json: String,
    /// Why it needs review, or a notice for the UI.
    pub reason: String,
    /// When it arose (Unix ms).
    pub created_ms: u64,
    /// When it was settled (Unix ms).
    pub resolved_ms: Option<u64>,
}

impl From<ConflictRecord> for Conflict {
    fn from(c: ConflictRecord) -> Conflict {
        Conflict {
            id: c.id,
            local_json: fields_json(&c.local),
            server_json: fields_json(&c.server),
            base_json: fields_json(&c.base),
            losing_json: fields_json(&c.losing),
            entity: c.entity,
            record_id: c.record_id,
            fields: c.fields,
            server_deleted: c.server_deleted,
            policy: c.policy,
            outcome: c.outcome,
            reason: c.reason,
            created_ms: c.created_ms,
            resolved_ms: c.resolved_ms,
        }
    }
}

/// How the user settles a conflict.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum Resolution {
    /// Keep the server's state; the local values go to the journal.
    AcceptServer,
    /// Send the local change again, on the server's current version.
    KeepLocal,
    /// Write these fields (JSON object text), on the server's current version.
    Merged {
        /// The fields.
        json: String,
    },
}

/// An op held back from sync until the app decides: retry or discard it.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct HeldOp {
    /// The op id, for `retry_op` and `discard_op`.
    pub op_id: String,
    /// The entity.
    pub entity: String,
    /// The record id.
    pub record_id: String,
    /// `needs_action` (the server refused it as invalid) or `dead_letter`.
    pub state: String,
    /// Sends that ended without a final answer.
    pub attempts: u32,
    /// The last error, as code and message (never record contents).
    pub last_error: Option<String>,
    /// When it was written (Unix ms).
    pub created_ms: u64,
}

impl From<OutboxOp> for HeldOp {
    fn from(o: OutboxOp) -> HeldOp {
        HeldOp {
            op_id: o.op_id.to_string(),
            entity: o.entity,
            record_id: o.record_id,
            state: o.state.as_str().to_owned(),
            attempts: o.attempts,
            last_error: o.last_error,
            created_ms: o.created_ms,
        }
    }
}

/// How to open a client; every field has a default.
#[derive(Debug, Clone, PartialEq, Eq, Default, uniffi::Record)]
pub struct ClientOptions {
    /// Merge policy per entity: a built-in (`field_merge`, `lww`,
    /// `server_authoritative`) or the path of a `.wasm` plugin. Entities without one keep
    /// every conflict open for the user.
    #[uniffi(default)]
    pub policies: HashMap<String, String>,
    /// Ops per pushed batch (default 50).
    #[uniffi(default)]
    pub batch_size: Option<u32>,
    /// Records per pulled page (default 500).
    #[uniffi(default)]
    pub pull_limit: Option<u32>,
    /// How often the worker polls when it is not subscribed to change notices, in ms (default
    /// 60,000).
    #[uniffi(default)]
    pub poll_every_ms: Option<u64>,
    /// The first backoff step after a failure, in ms (default 1,000); it doubles per failure.
    #[uniffi(default)]
    pub backoff_base_ms: Option<u64>,
    /// The longest backoff step, in ms (default 300,000).
    #[uniffi(default)]
    pub backoff_cap_ms: Option<u64>,
    /// The store's encryption key (SQLCipher): a passphrase, or 64 hex digits for a raw key
    /// (keep it in the Keychain). A new store is created encrypted; an encrypted store needs
    /// its key. `None`: a plain store.
    #[uniffi(default)]
    pub encryption_key: Option<String>,
}
