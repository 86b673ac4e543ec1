//! `ServerStore`: what the sync server persists, and the contract every server store keeps.

use async_trait::async_trait;

use crate::api::Scope;
use crate::check::Rules;
use crate::error::Result;
use crate::wire::{Change, Mutation, PushResponse};

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
    /// The tenant's horizon (see [`ServerStore::horizon`]) read in the same snapshot as the
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

/// The server's persistence. Every method is scoped to one tenant; no call sees another's data.
///
/// How the service calls it: from request handlers on the server's async runtime, many at once
/// (an implementation does its blocking work off the runtime, and serialises writers itself);
/// `compact` from one background task at a time. None of the methods may be left out.
#[async_trait]
pub trait ServerStore: Send + Sync {
    /// Applies a batch in one transaction. For each mutation in order: an op id seen before (in
    /// this tenant) answers its stored outcome and changes nothing; otherwise
    /// [`crate::check::decide`] decides, an applied change takes the next number of the tenant's
    /// change sequence (taken under a counter row in the same transaction, so the feed never
    /// skips a change), and a final outcome is stored under the op id. The response is stored
    /// under (tenant, user, key) with `body_hash` in the same transaction. If the key was stored
    /// meanwhile, nothing is applied and the stored push is returned as `Err(stored)`.
    async fn apply_batch(
        &self,
        scope: &Scope,
        key: &str,
        body_hash: &str,
        mutations: Vec<Mutation>,
        rules: &Rules,
    ) -> Result<std::result::Result<PushResponse, StoredPush>>;

    /// Up to `limit` changes with sequence greater than `after`, latest state per record, and the
    /// tenant's horizon, all read from one snapshot.
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
    /// tombstone, to at least that tombstone's sequence. So a cursor that could have missed a
    /// removed tombstone is older than the horizon and expires (the client re-syncs from the
    /// start), and a cursor at or after the horizon had already passed every removed tombstone.
    /// The horizon never moves back.
    ///
    /// Called by the server periodically (e.g. hourly), never on a request path. It may run while
    /// pushes and pulls do; a store should work in bounded write transactions so a large backlog
    /// does not hold up pushes. Running it again with the same cutoff removes nothing.
    async fn compact(&self, older_than_ms: u64) -> Result<CompactStats>;
}
