//! `ServerStore`: what the sync server persists, and the contract every server store keeps.

use async_trait::async_trait;

use std::collections::HashMap;

use uuid::Uuid;

use crate::check::StoredRecord;
use crate::error::Result;
use crate::wire::{Change, OpOutcome, PushResponse};

/// A stored response to an idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPush {
    /// A hash of the request body the key was first used with.
    pub body_hash: String,
    /// The response given then.
    pub response: PushResponse,
}

/// A page of the change feed as the store returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedPage {
    /// Latest state of each record changed after the requested sequence, in sequence order.
    pub changes: Vec<Change>,
    /// Where the next page starts: the sequence of the last change in the page, or, when no
    /// more follow, the tenant's current sequence (past tombstones compaction removed).
    pub last_seq: u64,
    /// Whether more changes follow.
    pub has_more: bool,
    /// The tenant's horizon (see [`FeedHead::horizon`]) read in the same snapshot as the
    /// changes, so a caller that checks its cursor against it cannot race a compaction that
    /// deletes tombstones between the check and the read.
    pub horizon: u64,
}

/// Where a tenant's change feed ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeedHead {
    /// The sequence of the tenant's latest change (0 before the first).
    pub seq: u64,
    /// The oldest sequence a cursor may still name (compaction moves it past every tombstone it
    /// removes; see [`ServerStore::compact`]).
    pub horizon: u64,
}

/// What one [`ServerStore::compact`] call removed, summed over all tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CompactStats {
    /// Tombstones (deleted records) removed from the feed.
    pub tombstones: u64,
    /// Stored op outcomes removed: a resend of one of those op ids is applied as a new op.
    pub op_results: u64,
    /// Stored responses to idempotency keys removed: the key can be used again.
    pub idempotency_keys: u64,
    /// Tenants in which anything was removed.
    pub tenants: u64,
}

/// A record's identity within a tenant: (entity, record id).
pub type RecordKey = (String, String);

/// What a push needs to decide its mutations, read inside its transaction (see [`PushTx::load`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    /// The tenant's change sequence, read under the counter row's lock.
    pub seq: u64,
    /// The response stored under the push's (tenant, user, key), if the key was used before.
    pub stored: Option<StoredPush>,
    /// The final outcomes stored under any of the requested op ids in this tenant.
    pub op_results: HashMap<Uuid, OpOutcome>,
    /// The current state of each requested record, in the order asked: `None` for a record that
    /// does not exist (a tombstone is a record).
    pub records: Vec<Option<StoredRecord>>,
}

/// Everything one push writes, in one call at the end of its transaction (see
/// [`PushTx::write`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PushWrites {
    /// The caller that pushed: the idempotency key is stored per (tenant, user, key).
    pub user: String,
    /// The push's idempotency key.
    pub key: String,
    /// The stored push: the body's hash and the response.
    pub push: StoredPush,
    /// The new state of each record the push changed, once per record, with the feed position
    /// of its last change (each in `(first, seq]`, all different).
    pub records: Vec<(StoredRecord, u64)>,
    /// The final outcomes to store under their op ids (all new in this tenant).
    pub op_results: Vec<(Uuid, OpOutcome)>,
    /// The tenant's new change sequence, if the push changed anything.
    pub seq: Option<u64>,
    /// When the push was applied, in unix milliseconds: stamps records, op results and the
    /// stored push for compaction.
    pub now_ms: u64,
}

/// The server's persistence: rows of records, op outcomes, stored pushes and one counter row per
/// tenant. Every method is scoped to one tenant; no call sees another's data.
///
/// A store only reads and writes rows. What a push means (idempotency keys, op replay, the
/// conflict check, feed numbering) is decided by the sync service inside a [`PushTx`] the store
/// opens, so every backend keeps the same semantics. Every backend passes the conformance suite
/// in `converge-server`'s integration tests.
///
/// How the service calls it: from request handlers on the server's async runtime, many at once
/// (an implementation does its blocking work off the runtime); `compact` from one background
/// task at a time.
#[async_trait]
pub trait ServerStore: Send + Sync {
    /// Opens a push's write transaction on `tenant`. By the time its [`PushTx::load`] returns,
    /// the tenant's counter row exists and this transaction holds its lock until it ends, so the
    /// pushes of one tenant run one at a time on any number of server processes sharing the
    /// store, and what it reads includes every push committed before it. Other tenants are not
    /// held up by it (beyond a backend's own limits: SQLite has one writer per file).
    async fn begin_push(&self, tenant: &str) -> Result<Box<dyn PushTx>>;

    /// Up to `limit` changes with sequence greater than `after`, latest state per record, and the
    /// tenant's horizon, all read from one snapshot. Snapshots only ever see a prefix of the
    /// tenant's feed: no change is visible before every change numbered below it.
    async fn changes(&self, tenant: &str, after: u64, limit: u32) -> Result<FeedPage>;

    /// The end of the tenant's change feed and its horizon, read together (for change notices).
    async fn head(&self, tenant: &str) -> Result<FeedHead>;

    /// One record's current state, also a tombstone (until compaction removes it).
    async fn record(&self, tenant: &str, entity: &str, record_id: &str) -> Result<Option<Change>>;

    /// Removes what is older than `older_than_ms` (unix milliseconds, exclusive) in every tenant:
    /// tombstones whose last change is older, and stored op outcomes and idempotency responses
    /// created before it. Live records are never removed.
    ///
    /// The safety rule: a tenant's horizon is advanced, in the same transaction that removes a
    /// tombstone (and under the tenant's counter row lock), to at least that tombstone's
    /// sequence. So a cursor that could have missed a removed tombstone is older than the
    /// horizon and expires (the client re-syncs from the start), and a cursor at or after the
    /// horizon had already passed every removed tombstone. The horizon never moves back.
    ///
    /// Called by the server periodically (e.g. hourly), never on a request path. It may run while
    /// pushes and pulls do; a store should work in bounded write transactions so a large backlog
    /// does not hold up pushes. Running it again with the same cutoff removes nothing.
    async fn compact(&self, older_than_ms: u64) -> Result<CompactStats>;

    /// Calls `changed(tenant)` whenever another process sharing this store commits a push that
    /// changes a tenant's feed, so live change notices reach subscribers on every server node.
    /// Notices may repeat or come late (a subscriber re-reads [`ServerStore::head`]); after a
    /// lost connection to the store a backend calls `changed` for every tenant (`None`). A store
    /// only one process uses (the default) never calls it.
    fn on_remote_change(&self, changed: RemoteChange) {
        let _ = changed;
    }
}

/// The callback of [`ServerStore::on_remote_change`]: a tenant, or `None` for all of them.
pub type RemoteChange = std::sync::Arc<dyn Fn(Option<&str>) + Send + Sync>;

/// A push's write transaction, from [`ServerStore::begin_push`]. Dropped without
/// [`PushTx::commit`], nothing it wrote is kept (a backend may discard its connection to make
/// sure).
#[async_trait]
pub trait PushTx: Send {
    /// Reads, in this transaction and under the tenant's lock: the tenant's sequence, the
    /// response stored under (tenant, `user`, `key`), the outcomes stored under `op_ids`, and the
    /// current state of `records` (all different). Called once, first. When a stored response
    /// is found, the op results and records may be left unread (empty).
    async fn load(&mut self, user: &str, key: &str, op_ids: Vec<Uuid>, records: Vec<RecordKey>) -> Result<Loaded>;

    /// Writes the push's rows and the counter, in this transaction (a backend may hold them
    /// until [`PushTx::commit`], which then writes and commits in one step).
    async fn write(&mut self, writes: PushWrites) -> Result<()>;

    /// Commits: every write of the transaction becomes visible at once, with the counter.
    async fn commit(self: Box<Self>) -> Result<()>;

    /// Ends the transaction keeping nothing (the push found its key already stored).
    async fn rollback(self: Box<Self>) -> Result<()>;
}
