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

    /// Names the sync cycle the calls that follow belong to (32 lowercase hex digits), so a
    /// transport can send it as W3C trace context; `None` ends it. Default: ignored.
    fn trace(&self, trace_id: Option<&str>) {
        let _ = trace_id;
    }
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

/// Where the app's bearer token comes from. Transport clients ask it for the token of each
/// request; after the server refuses a token, the sync worker asks for a fresh one and resumes.
#[async_trait]
pub trait AuthProvider: Send + Sync {
    /// The token to send now.
    async fn token(&self) -> Result<String>;

    /// Gets a new token after the server refused the current one (refresh it, or sign in again
    /// silently). An error leaves sync in `needs_auth` until the app calls `auth_changed`.
    async fn refresh(&self) -> Result<String>;
}

/// A fixed token: for tools and tests. Its refresh gives the same token back, so a refused token
/// stays refused.
#[derive(Clone)]
pub struct StaticToken(pub String);

#[async_trait]
impl AuthProvider for StaticToken {
    async fn token(&self) -> Result<String> {
        Ok(self.0.clone())
    }

    async fn refresh(&self) -> Result<String> {
        Err(crate::error::Error::Api(ApiError::new(
            crate::error::Code::Unauthorized,
            "a fixed token cannot be refreshed; give a new one",
        )))
    }
}

impl std::fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticToken(..)")
    }
}
