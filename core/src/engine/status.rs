//! What the UI reads: the overall sync status and each record's state.

use serde::{Deserialize, Serialize};

use crate::error::{ErrorClass, ErrorKind};
use crate::model::{Fields, Version};
use crate::store::LocalRecord;

/// What the sync worker is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
pub enum Phase {
    /// Nothing running.
    Idle,
    /// A sync cycle is running.
    Syncing,
    /// The last cycle could not reach the server.
    Offline,
    /// Waiting before the next attempt, after a failure that retrying may fix.
    BackingOff {
        /// Until when (Unix ms).
        until_ms: u64,
    },
    /// The server refused the token; the app must sign in again. Nothing is dropped.
    NeedsAuth,
    /// The last cycle stopped on an error that retrying will not fix.
    Failed,
}

/// The last error of a sync cycle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusError {
    /// The stable code, when the server gave one.
    pub code: Option<String>,
    /// What happened, with its causes (never record contents).
    pub message: String,
    /// How it is treated.
    pub class: ErrorClass,
    /// Where it arose (the server, the network, the device's store, ...). Errors stored by older
    /// versions have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ErrorKind>,
    /// When (Unix ms).
    pub at_ms: u64,
}

/// The overall sync status, as the watch stream carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncStatus {
    /// What the worker is doing.
    #[serde(flatten)]
    pub phase: Phase,
    /// Ops not yet acknowledged by the server.
    pub pending: u64,
    /// Ops the server refused as invalid; the user must change them.
    pub needs_action: u64,
    /// Dead letters: ops refused for good or failed too often; the app can retry or discard them.
    pub dead_letters: u64,
    /// When the oldest unacknowledged op was written (Unix ms).
    pub oldest_pending_ms: Option<u64>,
    /// Conflicts waiting for the user.
    pub open_conflicts: u64,
    /// When a sync cycle last completed (Unix ms).
    pub last_success_ms: Option<u64>,
    /// The last cycle's error, cleared by a successful cycle.
    pub last_error: Option<StatusError>,
    /// How far the running sync cycle is; none between cycles.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<SyncProgress>,
    /// How the device hears of others' changes.
    pub notices: Notices,
}

/// How the device hears of others' changes (the status's `notices`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Notices {
    /// No worker runs: changes arrive when the app syncs.
    #[default]
    Off,
    /// Subscribed to the server's change notices: others' changes are pulled as they happen.
    Live,
    /// Polling every `poll_every`: the server offers no notices, or the subscription is down
    /// (offline, or reconnecting after a failure).
    Polling,
}

/// How far a running sync cycle is: for a progress display during a long push or pull (a first
/// sync of many records).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct SyncProgress {
    /// Ops waiting to be pushed when the cycle started.
    pub to_push: u64,
    /// Ops pushed and answered so far.
    pub pushed: u64,
    /// Records pulled so far (how many the feed holds is not known ahead).
    pub pulled: u64,
}

impl StatusError {
    /// Reads a stored last error (JSON; older stores kept only the message).
    pub(crate) fn parse_stored(stored: &str) -> StatusError {
        serde_json::from_str(stored).unwrap_or_else(|_| StatusError {
            code: None,
            message: stored.to_owned(),
            class: ErrorClass::Retryable,
            kind: None,
            at_ms: 0,
        })
    }

    /// The status's account of `e`, at `at_ms`.
    pub(crate) fn of(e: &crate::error::Error, at_ms: u64) -> StatusError {
        StatusError {
            code: e.code().map(|c| c.to_string()),
            message: e.report(),
            class: e.class(),
            kind: Some(e.kind()),
            at_ms,
        }
    }

    /// The phase a cycle that ended with this error leaves.
    /// Only an unreachable server is `offline`: a busy or full store is retried like a busy server.
    pub(crate) fn phase(&self) -> Phase {
        let unreachable = match self.kind {
            Some(kind) => kind == ErrorKind::Network,
            // Stored before errors said where they arose: a retryable error without a code.
            None => self.code.is_none(),
        };
        match self.class {
            ErrorClass::Unauthorized => Phase::NeedsAuth,
            ErrorClass::Retryable if unreachable => Phase::Offline,
            ErrorClass::Retryable => Phase::Idle,
            ErrorClass::Rejected | ErrorClass::Fatal => Phase::Failed,
        }
    }
}

impl SyncStatus {
    /// How long the oldest pending op has waited, at `now_ms`.
    pub fn oldest_pending_age_ms(&self, now_ms: u64) -> Option<u64> {
        self.oldest_pending_ms.map(|t| now_ms.saturating_sub(t))
    }
}

/// A record's sync state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordState {
    /// The view equals the server's state.
    Synced,
    /// Local changes wait to be acknowledged.
    Pending,
    /// A conflict waits for the user.
    Conflict,
    /// An op is a dead letter (refused for good, or failed too often) and waits for the app.
    Failed,
    /// An op was refused as invalid; the user must change it (the server's message says why).
    NeedsAction,
}

/// A record as the app sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordView {
    /// The entity.
    pub entity: String,
    /// The record id.
    pub record_id: String,
    /// The fields, with pending local changes applied.
    pub fields: Fields,
    /// The last confirmed server version (0: not on the server yet).
    pub version: Version,
    /// Whether the record is deleted (locally or on the server).
    pub deleted: bool,
    /// Its sync state.
    pub state: RecordState,
}

impl From<&LocalRecord> for RecordView {
    fn from(r: &LocalRecord) -> RecordView {
        let state = if r.failed > 0 {
            RecordState::Failed
        } else if r.conflicts > 0 {
            RecordState::Conflict
        } else if r.pending > 0 {
            RecordState::Pending
        } else {
            RecordState::Synced
        };
        RecordView {
            entity: r.entity.clone(),
            record_id: r.record_id.clone(),
            fields: r.fields.clone(),
            version: r.server_version,
            deleted: r.deleted,
            state,
        }
    }
}

/// What one sync cycle did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// The cycle's trace id.
    pub trace_id: String,
    /// Batches sent (including resends).
    pub batches: u64,
    /// Ops acknowledged as applied.
    pub accepted: u64,
    /// Ops that conflicted.
    pub conflicts: u64,
    /// Ops refused for good.
    pub rejected: u64,
    /// Records received from the change feed.
    pub pulled: u64,
    /// Pages of the change feed.
    pub pages: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ApiError, Code, Error};

    #[test]
    fn only_an_unreachable_server_shows_offline() {
        let phase = |e: Error| StatusError::of(&e, 1).phase();
        assert_eq!(phase(Error::offline("connection refused")), Phase::Offline);
        let busy = Error::Store { detail: "database is locked".into(), retryable: true, source: None };
        assert_eq!(phase(busy), Phase::Idle, "a busy store is retried, not offline");
        assert_eq!(phase(Error::StoreFull("disk full".into())), Phase::Idle);
        assert_eq!(phase(ApiError::new(Code::Unavailable, "busy").into()), Phase::Idle);
        assert_eq!(phase(ApiError::new(Code::TokenExpired, "old").into()), Phase::NeedsAuth);
        assert_eq!(phase(Error::fatal("broken")), Phase::Failed);
        let full = StatusError::of(&Error::StoreFull("disk full".into()), 1);
        assert_eq!(full.kind, Some(ErrorKind::StoreFull), "the app can tell the user the device is full");
        // A last error stored by an older version, without a kind, reads as it did.
        let old = StatusError::parse_stored(r#"{"code":null,"message":"offline: x","class":"retryable","at_ms":5}"#);
        assert_eq!((old.kind, old.phase()), (None, Phase::Offline));
    }
}
