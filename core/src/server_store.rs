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
    /// The sequence of the last change in the page (or the requested one when empty).
    pub last_seq: u64,
    /// Whether more changes follow.
    pub has_more: bool,
}

/// The server's persistence. Every method is scoped to one tenant; no call sees another's data.
#[async_trait]
pub trait ServerStore: Send + Sync {
    /// The response stored for (tenant, user, key), if any.
    async fn stored_push(&self, scope: &Scope, key: &str) -> Result<Option<StoredPush>>;

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
        mutations: &[Mutation],
        rules: &Rules,
    ) -> Result<std::result::Result<PushResponse, StoredPush>>;

    /// Up to `limit` changes with sequence greater than `after`, latest state per record.
    async fn changes(&self, tenant: &str, after: u64, limit: u32) -> Result<FeedPage>;

    /// The oldest sequence a cursor may still name (compaction moves it forward).
    async fn horizon(&self, tenant: &str) -> Result<u64>;

    /// One record's current state, also a tombstone.
    async fn record(&self, tenant: &str, entity: &str, record_id: &str) -> Result<Option<Change>>;
}
