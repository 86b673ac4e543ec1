//! The protocol as a trait: `SyncApi`, implemented by the server's service and by every transport client.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{ApiError, Result};
use crate::wire::{Change, PullRequest, PullResponse, PushRequest, PushResponse};

/// Who is calling: everything a call reads or writes is inside the tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    /// The tenant (the shard key).
    pub tenant: String,
    /// The user within the tenant.
    pub user: String,
}

/// The sync protocol. The engine talks to `dyn SyncApi`; the server's `SyncService` implements it,
/// and each transport client implements it by calling over the wire.
#[async_trait]
pub trait SyncApi: Send + Sync {
    /// Applies a batch of mutations, at most once per op id; the same idempotency key with the
    /// same batch gives the stored response again (with `replayed` set) and changes nothing.
    async fn push(&self, req: PushRequest) -> Result<PushResponse>;

    /// Returns the next page of the change feed after `req.cursor`: the latest state of each
    /// record changed since, in change order.
    async fn pull(&self, req: PullRequest) -> Result<PullResponse>;

    /// Returns one record's current state (also when deleted); `not_found` if it never existed.
    async fn record(&self, entity: &str, record_id: &str) -> Result<Change>;
}

/// A server-side `SyncApi` for each caller: transports authenticate a request, then ask for the
/// API scoped to the caller's tenant and user.
pub trait Tenancy: Send + Sync {
    /// The API as seen by `scope`.
    fn scoped(&self, scope: Scope) -> Arc<dyn SyncApi>;
}

/// Turns a bearer token into a scope.
pub trait Authenticator: Send + Sync {
    /// The caller's scope, or `unauthorized` / `token_expired`.
    fn authenticate(&self, bearer: &str) -> std::result::Result<Scope, ApiError>;
}
