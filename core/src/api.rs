//! The protocol as a trait: `SyncApi`, implemented by the server's service and by every transport client.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::{ApiError, Result};
use crate::wire::{Change, Notice, PullRequest, PullResponse, PushRequest, PushResponse};

/// Who is calling: everything a call reads or writes is inside the tenant, and only as far as
/// `access` allows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    /// The tenant (the shard key).
    pub tenant: String,
    /// The user within the tenant.
    pub user: String,
    /// What the caller's token allows.
    pub access: Access,
}

impl Scope {
    /// A caller with full access (a token that names no scopes).
    pub fn new(tenant: impl Into<String>, user: impl Into<String>) -> Scope {
        Scope { tenant: tenant.into(), user: user.into(), access: Access::default() }
    }
}

/// What a token allows: reading (pull, records, events), writing (push), and the entity types it
/// may touch. The default, for a token that names none of this, is everything.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Access {
    /// `sync:read`: pull the feed, read records, subscribe to notices.
    pub read: bool,
    /// `sync:write`: push mutations.
    pub write: bool,
    /// The entity types the token may write and read; `None` for all.
    pub entities: Option<std::collections::BTreeSet<String>>,
}

impl Default for Access {
    fn default() -> Self {
        Access { read: true, write: true, entities: None }
    }
}

impl Access {
    /// Whether the token may touch `entity`.
    pub fn allows_entity(&self, entity: &str) -> bool {
        self.entities.as_ref().is_none_or(|e| e.contains(entity))
    }
}

/// The sync protocol. The engine talks to `dyn SyncApi`; the server's `SyncService` implements it,
/// and each transport client implements it by calling over the wire.
///
/// How the engine calls it: from its sync cycle, on the app's async runtime, one call at a time
/// per engine (one cycle at a time), in any number of engines at once (a client may be shared:
/// keep no per-call state on it; a cycle's trace id comes with the call, [`cycle_trace_id`]).
/// A cycle makes one `push` per batch (the same request again, byte for byte, after a failure
/// that got no answer) and `pull`s page by page; `record` is for tools and tests, the engine
/// never calls it. An implementation must give every failure its class (`Error::class`): an
/// unreachable server is `Offline`, an answer of the wire contract is `Api` with its code and
/// Retry-After; anything else it cannot place is `Fatal`. None of the methods may be left out.
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

    /// Opens a stream of live change notices for the caller's tenant: one (coalesced) whenever
    /// the feed holds changes after `cursor` (at once if it already does). A cursor the server
    /// cannot serve is `cursor_expired` here, before the stream opens; a server that does not
    /// offer notices is [`Error::Unsupported`](crate::Error::Unsupported), and the caller polls.
    /// The stream ends (`None`, or an error with its class) when the connection does; the
    /// caller subscribes again with its cursor and misses nothing, since a notice only says
    /// "pull".
    async fn subscribe(&self, cursor: Option<String>) -> Result<Subscription>;
}

/// A stream of live change notices ([`SyncApi::subscribe`]). Dropping it closes the stream.
#[derive(Debug)]
pub struct Subscription {
    rx: tokio::sync::mpsc::Receiver<Result<Notice>>,
}

impl Subscription {
    /// A subscription fed through the returned sender; the stream ends when every sender is
    /// dropped. A sender learns that the subscriber left from `closed()` or a failed send.
    pub fn channel() -> (tokio::sync::mpsc::Sender<Result<Notice>>, Subscription) {
        // Notices coalesce: a few in the buffer are as good as many.
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        (tx, Subscription { rx })
    }

    /// The next notice; `None` once the stream has ended. An error ends the stream too.
    pub async fn next(&mut self) -> Option<Result<Notice>> {
        self.rx.recv().await
    }

    /// The receiving end, for adapters that need a `Stream` (wrap it in
    /// `tokio_stream::wrappers::ReceiverStream`).
    pub fn into_receiver(self) -> tokio::sync::mpsc::Receiver<Result<Notice>> {
        self.rx
    }
}

tokio::task_local! {
    static CYCLE_TRACE_ID: String;
}

/// Runs `calls` as part of the sync cycle `trace_id` (32 lowercase hex digits): every
/// [`SyncApi`] call they make carries that id ([`cycle_trace_id`]), for a transport to send as
/// W3C trace context. The id travels with the calls' task, not with the client, so engines
/// sharing one client never mix their cycles' ids.
pub async fn in_cycle<F: std::future::Future>(trace_id: String, calls: F) -> F::Output {
    CYCLE_TRACE_ID.scope(trace_id, calls).await
}

/// The trace id of the sync cycle the current call belongs to (see [`in_cycle`]), if any.
pub fn cycle_trace_id() -> Option<String> {
    CYCLE_TRACE_ID.try_with(String::clone).ok()
}

/// The token of an `Authorization: Bearer <token>` value (the scheme in any case); `None` for
/// another scheme or an empty token.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Whether `id` is a W3C trace id: 32 lowercase hex digits, not all zero.
pub fn is_trace_id(id: &str) -> bool {
    id.len() == 32
        && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && id.bytes().any(|b| b != b'0')
}

/// A W3C `traceparent` for `trace_id` with a fresh parent (span) id, sampled.
pub fn traceparent_for(trace_id: &str) -> String {
    // The last 8 bytes of a UUIDv7 are random (the variant bits make them non-zero).
    let span: String = uuid::Uuid::now_v7().as_bytes()[8..].iter().map(|b| format!("{b:02x}")).collect();
    format!("00-{trace_id}-{span}-01")
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), if it is well formed.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let zero = |s: &str| s.bytes().all(|b| b == b'0');
    let ok = hex(version, 2)
        && version != "ff"
        && (version != "00" || parts.next().is_none())
        && is_trace_id(trace)
        && hex(parent, 16)
        && !zero(parent)
        && hex(flags, 2);
    ok.then_some(trace)
}

/// A server-side `SyncApi` for each caller: transports authenticate a request, then ask for the
/// API scoped to the caller's tenant and user. Called once per request, on the server's async
/// runtime, from many requests at once: keep it cheap (no I/O).
pub trait Tenancy: Send + Sync {
    /// The API as seen by `scope`.
    fn scoped(&self, scope: Scope) -> Arc<dyn SyncApi>;
}

/// Turns a bearer token into a scope. Called once per request before anything else, on the
/// server's async runtime, from many requests at once: it must not block (verify a signature;
/// no network calls).
pub trait Authenticator: Send + Sync {
    /// The caller's scope, or `unauthorized` / `token_expired`.
    fn authenticate(&self, bearer: &str) -> std::result::Result<Scope, ApiError>;
}

/// Where the app's bearer token comes from. Transport clients ask it for the token of each
/// request (`token`, on the app's async runtime: cache the token, it is asked often); after the
/// server refuses a token, the sync worker asks once for a fresh one (`refresh`) and resumes the
/// same batch. An error keeps its class: a passing failure (the identity provider unreachable)
/// should be `Offline`, so sync retries; an `Unauthorized` one means the user must sign in, and
/// sync waits (`needs_auth`) until the app calls `auth_changed`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_parsing() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(trace_id_of(&format!("00-{id}-00f067aa0ba902b7-01")), Some(id));
        assert_eq!(trace_id_of(&format!("00-{id}-00f067aa0ba902b7-01-extra")), None);
        assert_eq!(trace_id_of(&format!("01-{id}-00f067aa0ba902b7-01-extra")), Some(id));
        assert_eq!(trace_id_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id_of(&format!("00-{}-00f067aa0ba902b7-01", id.to_uppercase())), None);
        assert_eq!(trace_id_of("garbage"), None);
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
    }

    #[test]
    fn made_traceparents_parse_back() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let tp = traceparent_for(id);
        assert_eq!(trace_id_of(&tp), Some(id));
        assert_ne!(traceparent_for(id), tp, "a new parent id each time");
        assert!(!is_trace_id("00000000000000000000000000000000"));
    }
}
