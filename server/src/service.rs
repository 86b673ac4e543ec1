//! The sync service: [`SyncService`] serves the [`SyncApi`] to each caller over any
//! [`ServerStore`], with idempotency keys (replay, reuse, in flight), limits, and the change feed's
//! opaque cursors.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use converge_core::check::Rules;
use converge_core::model::{validate_entity, validate_record_id};
use converge_core::server_store::{CompactStats, ServerStore, StoredPush};
use converge_core::wire::{
    Change, Limits, PULL_LIMIT_DEFAULT, PULL_LIMIT_MAX, PullRequest, PullResponse, PushBatch, PushRequest,
    PushResponse, validate_idempotency_key,
};
use converge_core::{ApiError, Code, Scope, Subscription, SyncApi, Tenancy};

use crate::admission::{Admission, AdmissionConfig};
use crate::cursor::{Cursor, decode_cursor};
use crate::notices::{self, Hub};
use sha2::{Digest, Sha256};
use tracing::{Instrument, Span, debug, error, field, info, info_span, warn};

pub(crate) mod apply;

/// How long a client should wait after the store answered busy.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// (tenant, user, idempotency key) of a push that is running.
type InFlightKey = (String, String, String);

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn ServerStore>,
    rules: Rules,
    admission: Admission,
    in_flight: Mutex<HashSet<InFlightKey>>,
    hub: Arc<Hub>,
}

/// The sync service over a server store. Cheap to clone: clones share the store and the set of
/// pushes in flight.
#[derive(Clone)]
pub struct SyncService {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SyncService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncService").field("rules", &self.inner.rules).finish_non_exhaustive()
    }
}

impl SyncService {
    /// A service over `store`, enforcing `limits`.
    pub fn new(store: Arc<dyn ServerStore>, limits: Limits) -> Self {
        Self::with_rules(store, Rules::with_limits(limits))
    }

    /// A service over `store`, enforcing `rules` (limits and per-entity check mode pins).
    pub fn with_rules(store: Arc<dyn ServerStore>, rules: Rules) -> Self {
        Self::with_admission(store, rules, AdmissionConfig::default())
    }

    /// A service over `store`, enforcing `rules`, that sheds load past `admission`'s limits.
    pub fn with_admission(store: Arc<dyn ServerStore>, rules: Rules, admission: AdmissionConfig) -> Self {
        let hub = Arc::new(Hub::default());
        // Pushes committed by other server processes on the same store wake subscribers here.
        let woken = Arc::clone(&hub);
        store.on_remote_change(Arc::new(move |tenant: Option<&str>| match tenant {
            Some(tenant) => woken.changed(tenant),
            None => woken.changed_all(),
        }));
        let admission = Admission::new(admission);
        SyncService { inner: Arc::new(Inner { store, rules, admission, in_flight: Mutex::new(HashSet::new()), hub }) }
    }

    /// The limits the service enforces.
    pub fn limits(&self) -> &Limits {
        &self.inner.rules.limits
    }

    /// The rules the service enforces.
    pub fn rules(&self) -> &Rules {
        &self.inner.rules
    }

    /// Compacts the store: removes tombstones, op results and idempotency responses older than
    /// `retention` (see [`ServerStore::compact`]; cursors that could miss a removed tombstone
    /// expire). Logs the counts, never contents; a failure is returned for the caller to log (a
    /// store failure leaves whole chunks removed or not, never half of one). Meant for a periodic
    /// background task.
    pub async fn compact(&self, retention: Duration) -> converge_core::Result<CompactStats> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let cutoff = u64::try_from(now.saturating_sub(retention).as_millis()).unwrap_or(u64::MAX);
        let started = Instant::now();
        let stats = self.inner.store.compact(cutoff).await?;
        info!(
            cutoff_ms = cutoff,
            tombstones = stats.tombstones,
            op_results = stats.op_results,
            idempotency_keys = stats.idempotency_keys,
            tenants = stats.tenants,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compaction done"
        );
        Ok(stats)
    }

    /// The API as seen by `scope`, as a concrete type (see [`Tenancy::scoped`] for the `dyn` one).
    pub fn for_scope(&self, scope: Scope) -> ScopedSync {
        ScopedSync { inner: Arc::clone(&self.inner), scope }
    }
}

impl Tenancy for SyncService {
    fn scoped(&self, scope: Scope) -> Arc<dyn SyncApi> {
        Arc::new(self.for_scope(scope))
    }
}

/// The sync API for one tenant and user.
#[derive(Clone)]
pub struct ScopedSync {
    inner: Arc<Inner>,
    scope: Scope,
}

impl std::fmt::Debug for ScopedSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopedSync").field("scope", &self.scope).finish_non_exhaustive()
    }
}

impl ScopedSync {
    /// The caller this API is scoped to.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// Refuses the call unless the token allows `what` (`sync:read` or `sync:write`).
    fn require(&self, allowed: bool, what: &str) -> converge_core::Result<()> {
        if allowed {
            return Ok(());
        }
        debug!(needs = what, "refused: the token lacks the scope");
        Err(ApiError::new(Code::Forbidden, format!("the token does not allow this: it needs the scope {what}")).into())
    }

    async fn push_in_span(&self, req: PushRequest) -> converge_core::Result<PushResponse> {
        self.require(self.scope.access.write, crate::auth::SCOPE_WRITE)?;
        let key = req.idempotency_key.as_str();
        validate_idempotency_key(key)?;
        Span::current().record("key", key);
        req.batch.validate(&self.inner.rules.limits)?;
        let admission = &self.inner.admission;
        let critical = admission.is_critical(req.batch.mutations.iter().map(|m| m.entity.as_str()));
        let _admitted = admission.push(&self.scope.tenant, critical)?;
        let hash = body_hash(&req.batch)?;
        // A key seen before is found by `apply_batch` itself, in its transaction, and replayed:
        // no read of its own ahead of every push.
        let _in_flight = InFlight::begin(&self.inner, &self.scope, key).ok_or_else(|| {
            debug!("push refused: the key is in flight");
            ApiError::new(Code::IdempotencyKeyInFlight, "a request with this Idempotency-Key is still running")
        })?;
        let applied =
            apply::apply_batch(&*self.inner.store, &self.scope, key, &hash, req.batch.mutations, &self.inner.rules)
                .await
                .map_err(store_error("apply_batch"))?;
        match applied {
            Ok(response) => {
                if !response.accepted.is_empty() {
                    self.inner.hub.changed(&self.scope.tenant);
                }
                debug!(
                    accepted = response.accepted.len(),
                    conflicts = response.conflicts.len(),
                    rejected = response.rejected.len(),
                    "push applied"
                );
                Ok(response)
            }
            Err(stored) => replay(stored, &hash),
        }
    }

    async fn pull_in_span(&self, req: PullRequest) -> converge_core::Result<PullResponse> {
        self.require(self.scope.access.read, crate::auth::SCOPE_READ)?;
        self.inner.admission.request(&self.scope.tenant)?;
        let limit = match req.limit {
            None => PULL_LIMIT_DEFAULT,
            Some(0) => return Err(ApiError::invalid("limit is at least 1").into()),
            Some(n) => n.min(PULL_LIMIT_MAX),
        };
        let tenant = self.scope.tenant.as_str();
        let cursor = req.cursor.as_deref().map(decode_cursor).transpose()?;
        let after = cursor.map_or(0, |c| c.seq);
        let page = self.inner.store.changes(tenant, after, limit).await.map_err(store_error("changes"))?;
        // Checked against the horizon read with the page, not before it: a compaction between a
        // separate check and the read could remove a tombstone this cursor still needs.
        if let Some(cursor) = cursor
            && cursor.expired(page.horizon)
        {
            debug!(after, since = cursor.horizon, horizon = page.horizon, "pull refused: cursor expired");
            return Err(ApiError::new(
                Code::CursorExpired,
                "the cursor is older than the server's retention horizon; sync again from the start",
            )
            .into());
        }
        debug!(after, changes = page.changes.len(), last_seq = page.last_seq, has_more = page.has_more, "pull");
        let next = Cursor { seq: page.last_seq, horizon: page.horizon };
        let mut changes = page.changes;
        // A token limited to some entity types sees only those; the cursor moves past the rest.
        if self.scope.access.entities.is_some() {
            changes.retain(|c| self.scope.access.allows_entity(&c.entity));
        }
        Ok(PullResponse { changes, cursor: next.encode(), has_more: page.has_more })
    }

    async fn record_in_span(&self, entity: &str, record_id: &str) -> converge_core::Result<Change> {
        self.require(self.scope.access.read, crate::auth::SCOPE_READ)?;
        validate_entity(entity).map_err(|e| ApiError::invalid(e.to_string()))?;
        validate_record_id(record_id).map_err(|e| ApiError::invalid(e.to_string()))?;
        if !self.scope.access.allows_entity(entity) {
            return Err(ApiError::new(Code::Forbidden, "the token may not read this entity type").into());
        }
        let found =
            self.inner.store.record(&self.scope.tenant, entity, record_id).await.map_err(store_error("record"))?;
        found.ok_or_else(|| ApiError::new(Code::NotFound, "no such record").into())
    }

    async fn subscribe_in_span(&self, cursor: Option<String>) -> converge_core::Result<Subscription> {
        self.require(self.scope.access.read, crate::auth::SCOPE_READ)?;
        let tenant = self.scope.tenant.clone();
        let cursor = cursor.as_deref().filter(|c| !c.is_empty()).map(decode_cursor).transpose()?;
        // Watching before the first read: a push after that read wakes the subscription.
        let wake = self.inner.hub.watch(&tenant);
        let head = self.inner.store.head(&tenant).await.map_err(store_error("head"))?;
        if let Some(cursor) = cursor
            && (cursor.expired(head.horizon) || cursor.seq > head.seq)
        {
            debug!(after = cursor.seq, horizon = head.horizon, "subscribe refused: cursor expired");
            return Err(ApiError::new(
                Code::CursorExpired,
                "the cursor is not one this server can serve; sync again from the start",
            )
            .into());
        }
        let (tx, subscription) = Subscription::channel();
        let told = cursor.map_or(0, |c| c.seq);
        tokio::spawn(notices::feed(Arc::clone(&self.inner), tenant, told, head, wake, tx).in_current_span());
        debug!(after = told, "subscribed");
        Ok(subscription)
    }
}

#[async_trait]
impl SyncApi for ScopedSync {
    async fn push(&self, req: PushRequest) -> converge_core::Result<PushResponse> {
        let span = info_span!(
            "push",
            tenant = %self.scope.tenant,
            key = field::Empty,
            ops = req.batch.mutations.len()
        );
        self.push_in_span(req).instrument(span).await
    }

    async fn pull(&self, req: PullRequest) -> converge_core::Result<PullResponse> {
        let span = info_span!("pull", tenant = %self.scope.tenant, limit = ?req.limit);
        self.pull_in_span(req).instrument(span).await
    }

    async fn record(&self, entity: &str, record_id: &str) -> converge_core::Result<Change> {
        let span = info_span!("record", tenant = %self.scope.tenant);
        self.record_in_span(entity, record_id).instrument(span).await
    }

    async fn subscribe(&self, cursor: Option<String>) -> converge_core::Result<Subscription> {
        let span = info_span!("subscribe", tenant = %self.scope.tenant);
        self.subscribe_in_span(cursor).instrument(span).await
    }
}

/// Marks (tenant, user, key) as running until dropped, on every exit path.
struct InFlight {
    inner: Arc<Inner>,
    key: InFlightKey,
}

impl InFlight {
    /// `None` if the key is already running.
    fn begin(inner: &Arc<Inner>, scope: &Scope, key: &str) -> Option<InFlight> {
        let key = (scope.tenant.clone(), scope.user.clone(), key.to_owned());
        let mut set = inner.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
        set.insert(key.clone()).then(|| InFlight { inner: Arc::clone(inner), key })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.inner.in_flight.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.key);
    }
}

/// The stored response again if the body is the same one, else `idempotency_key_reused`.
fn replay(stored: StoredPush, hash: &str) -> converge_core::Result<PushResponse> {
    if stored.body_hash != hash {
        debug!("push refused: the key was used with another body");
        return Err(ApiError::new(
            Code::IdempotencyKeyReused,
            "this Idempotency-Key was used before with another request body",
        )
        .into());
    }
    debug!("push replayed");
    let mut response = stored.response;
    response.replayed = true;
    Ok(response)
}

/// Hex SHA-256 of the batch's canonical JSON (fields in declaration order, object keys sorted).
fn body_hash(batch: &PushBatch) -> converge_core::Result<String> {
    let bytes = serde_json::to_vec(batch).map_err(|e| {
        error!(category = ?e.classify(), "cannot serialize a push batch");
        converge_core::Error::from(ApiError::new(Code::Internal, "internal server error"))
    })?;
    Ok(Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

/// Turns a store failure into what the caller sees: a client mistake keeps its code, busy is
/// `unavailable` with a retry delay, anything else is `internal` with the detail only in the log.
pub(crate) fn store_error(op: &'static str) -> impl Fn(converge_core::Error) -> converge_core::Error {
    move |e| match e {
        converge_core::Error::Api(api) => api.into(),
        converge_core::Error::Store { retryable: true, detail, .. } => {
            warn!(op, %detail, "store busy");
            ApiError::new(Code::Unavailable, "the server is busy; retry shortly")
                .with_retry_after(BUSY_RETRY_AFTER)
                .into()
        }
        other => {
            error!(op, detail = %other.report(), "store failed");
            ApiError::new(Code::Internal, "internal server error").into()
        }
    }
}

#[cfg(test)]
mod tests;
