//! Idempotency keys: replay byte for byte, reuse with another body (422), in flight (409), the
//! race where the key is stored meanwhile, and keys freed on every exit path.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use converge_core::server_store::{CompactStats, FeedHead, FeedPage, PushTx, ServerStore};
use converge_core::wire::Change;
use converge_core::{Code, Tenancy};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::support::*;

async fn the_same_key_and_batch_replays_the_stored_response_byte_for_byte(backend: Backend) {
    let server = Server::new(backend).await;
    let api = server.api("acme", "alice");
    push(&api, vec![create("n1", json!({"title": "t", "n": 1.5}))]).await;
    let req = request(
        "batch-1",
        vec![update("n1", 1, json!({"title": "t2"})), update("nope", 1, json!({})), create("n1", json!({}))],
    );
    let first = api.push(req.clone()).await.unwrap();
    assert!(!first.replayed);
    assert_eq!((first.accepted.len(), first.rejected.len(), first.conflicts.len()), (1, 1, 1));
    let before = server.stats("acme").await;

    let second = api.push(req.clone()).await.unwrap();
    assert!(second.replayed);
    assert_eq!(serde_json::to_vec(&second).unwrap(), serde_json::to_vec(&first).unwrap());
    assert_eq!(server.stats("acme").await, before);
    // Also through a fresh service over the same file: the key is stored, not only remembered.
    let again = server.service_over(server.store.clone()).scoped(scope("acme", "alice"));
    let third = again.push(req).await.unwrap();
    assert!(third.replayed);
    assert_eq!(serde_json::to_vec(&third).unwrap(), serde_json::to_vec(&first).unwrap());
}

async fn the_same_key_with_another_batch_is_refused_with_422(backend: Backend) {
    let server = Server::new(backend).await;
    let api = server.api("acme", "alice");
    api.push(request("k", vec![create("n1", json!({"a": 1}))])).await.unwrap();
    let err = api.push(request("k", vec![create("n2", json!({"a": 1}))])).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::IdempotencyKeyReused));
    assert_eq!(Code::IdempotencyKeyReused.http_status(), 422);
    assert_eq!(api.record("notes", "n2").await.unwrap_err().code(), Some(Code::NotFound));
    // The key is scoped by user: another user's same key runs.
    let bob = server.api("acme", "bob");
    let r = bob.push(request("k", vec![create("n2", json!({"a": 1}))])).await.unwrap();
    assert_eq!((r.accepted.len(), r.replayed), (1, false));
}

/// A store whose `begin_push` waits for a permit, so a push stays in flight as long as a test
/// wants; `entered` counts the calls that reached it.
struct GatedStore {
    inner: Arc<dyn ServerStore>,
    gate: Semaphore,
    entered: Semaphore,
}

#[async_trait]
impl ServerStore for GatedStore {
    async fn begin_push(&self, tenant: &str) -> converge_core::Result<Box<dyn PushTx>> {
        self.entered.add_permits(1);
        self.gate.acquire().await.unwrap().forget();
        self.inner.begin_push(tenant).await
    }

    async fn changes(&self, tenant: &str, after: u64, limit: u32) -> converge_core::Result<FeedPage> {
        self.inner.changes(tenant, after, limit).await
    }

    async fn head(&self, tenant: &str) -> converge_core::Result<FeedHead> {
        self.inner.head(tenant).await
    }

    async fn record(&self, tenant: &str, entity: &str, id: &str) -> converge_core::Result<Option<Change>> {
        self.inner.record(tenant, entity, id).await
    }

    async fn compact(&self, older_than_ms: u64) -> converge_core::Result<CompactStats> {
        self.inner.compact(older_than_ms).await
    }
}

async fn the_same_key_while_the_first_runs_is_refused_with_409(backend: Backend) {
    let server = Server::new(backend).await;
    let gated =
        Arc::new(GatedStore { inner: server.store.clone(), gate: Semaphore::new(0), entered: Semaphore::new(0) });
    let service = server.service_over(gated.clone());
    let api = service.scoped(scope("acme", "alice"));
    let req = request("k", vec![create("n1", json!({"a": 1}))]);

    let first = tokio::spawn({
        let (api, req) = (api.clone(), req.clone());
        async move { api.push(req).await }
    });
    // Wait until the first push is inside the store.
    tokio::time::timeout(Duration::from_secs(10), gated.entered.acquire()).await.unwrap().unwrap().forget();

    // (A timeout, so a broken in-flight check fails the test instead of hanging at the gate.)
    let in_time = |push| async { tokio::time::timeout(Duration::from_secs(10), push).await.expect("not refused") };
    let err = in_time(api.push(req.clone())).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::IdempotencyKeyInFlight));
    assert_eq!(err.code().unwrap().http_status(), 409);
    // Another body under the same key is in flight too (the first has not been stored yet).
    let other = in_time(api.push(request("k", vec![create("n2", json!({}))]))).await.unwrap_err();
    assert_eq!(other.code(), Some(Code::IdempotencyKeyInFlight));
    // Another user's same key is not blocked by it: it reaches the store.
    let bob = service.scoped(scope("acme", "bob"));
    let bobs = tokio::spawn({
        let req = request("k", vec![create("b1", json!({}))]);
        async move { bob.push(req).await }
    });
    tokio::time::timeout(Duration::from_secs(10), gated.entered.acquire()).await.unwrap().unwrap().forget();

    gated.gate.add_permits(2);
    let done = first.await.unwrap().unwrap();
    assert_eq!((done.accepted.len(), done.replayed), (1, false));
    assert_eq!(bobs.await.unwrap().unwrap().accepted.len(), 1);
    // Once finished, the key replays instead (found by the store's `begin_push`, through the gate).
    gated.gate.add_permits(1);
    let replay = in_time(api.push(req)).await.unwrap();
    assert!(replay.replayed);
    assert_eq!(replay.accepted, done.accepted);
}

/// A store that forgets stored pushes when asked (as if the first request stored its key right
/// after the check), and fails `begin_push` the first `failures` times: busy first, then broken.
struct FlakyStore {
    inner: Arc<dyn ServerStore>,
    failures: AtomicUsize,
}

#[async_trait]
impl ServerStore for FlakyStore {
    async fn begin_push(&self, tenant: &str) -> converge_core::Result<Box<dyn PushTx>> {
        match self.failures.fetch_sub(1, Ordering::SeqCst) {
            2 => {
                Err(converge_core::Error::Store { detail: "database is locked".into(), retryable: true, source: None })
            }
            1 => Err(converge_core::Error::store("disk I/O error")),
            _ => self.inner.begin_push(tenant).await,
        }
    }

    async fn changes(&self, tenant: &str, after: u64, limit: u32) -> converge_core::Result<FeedPage> {
        self.inner.changes(tenant, after, limit).await
    }

    async fn head(&self, tenant: &str) -> converge_core::Result<FeedHead> {
        self.inner.head(tenant).await
    }

    async fn record(&self, tenant: &str, entity: &str, id: &str) -> converge_core::Result<Option<Change>> {
        self.inner.record(tenant, entity, id).await
    }

    async fn compact(&self, older_than_ms: u64) -> converge_core::Result<CompactStats> {
        self.inner.compact(older_than_ms).await
    }
}

async fn store_failures_free_the_key_and_a_raced_key_still_replays_or_refuses(backend: Backend) {
    let server = Server::new(backend).await;
    let flaky = Arc::new(FlakyStore { inner: server.store.clone(), failures: AtomicUsize::new(2) });
    let api = server.service_over(flaky).scoped(scope("acme", "alice"));
    let req = request("k", vec![create("n1", json!({"a": 1}))]);

    let busy = api.push(req.clone()).await.unwrap_err();
    let converge_core::Error::Api(busy) = busy else { panic!("{busy:?}") };
    assert_eq!((busy.code, busy.retry_after), (Code::Unavailable, Some(Duration::from_secs(1))));

    let broken = api.push(req.clone()).await.unwrap_err();
    let converge_core::Error::Api(broken) = broken else { panic!("{broken:?}") };
    assert_eq!(broken.code, Code::Internal);
    assert!(!broken.detail.contains("disk"), "{}", broken.detail);

    // The failed attempts left the key free and stored nothing: this one runs.
    let first = api.push(req.clone()).await.unwrap();
    assert!(!first.replayed);
    // The key check misses (the race), so the store's own check in the transaction decides.
    let raced = api.push(req).await.unwrap();
    assert!(raced.replayed);
    assert_eq!(raced.accepted, first.accepted);
    let reused = api.push(request("k", vec![create("n9", json!({}))])).await.unwrap_err();
    assert_eq!(reused.code(), Some(Code::IdempotencyKeyReused));
    assert_eq!(server.stats("acme").await.seq, 1);
}

on_every_backend!(
    the_same_key_and_batch_replays_the_stored_response_byte_for_byte,
    the_same_key_with_another_batch_is_refused_with_422,
    the_same_key_while_the_first_runs_is_refused_with_409,
    store_failures_free_the_key_and_a_raced_key_still_replays_or_refuses,
);
