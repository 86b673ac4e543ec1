//! A `SyncApi` decorator that loses requests, responses or pulls, or fails pushes with a server
//! error, on demand, or runs a step of the test
//! while a push is on the wire.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use converge_core::{Change, Error, PullRequest, PullResponse, PushRequest, PushResponse, Result, SyncApi};

/// Wraps a `SyncApi`; each counter says how many of the next pushes lose their request (never
/// reaching the server) or their response (after the server applied it).
pub(crate) struct Faulty {
    inner: Arc<dyn SyncApi>,
    pub(crate) drop_requests: AtomicU32,
    pub(crate) drop_responses: AtomicU32,
    /// Pushes answered with a server error (500) without being applied.
    pub(crate) server_errors: AtomicU32,
    /// Pulls that are lost.
    pub(crate) drop_pulls: AtomicU32,
    pub(crate) replays: AtomicU32,
    pub(crate) offline: std::sync::atomic::AtomicBool,
    /// Runs once, while the next push is on the wire (after the engine had a turn to run).
    pub(crate) during_push: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Faulty {
    pub(crate) fn new(inner: Arc<dyn SyncApi>) -> Arc<Faulty> {
        Arc::new(Faulty {
            inner,
            drop_requests: AtomicU32::new(0),
            drop_responses: AtomicU32::new(0),
            server_errors: AtomicU32::new(0),
            drop_pulls: AtomicU32::new(0),
            replays: AtomicU32::new(0),
            offline: Default::default(),
            during_push: Mutex::new(None),
        })
    }
}

fn take(c: &AtomicU32) -> bool {
    c.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

#[async_trait]
impl SyncApi for Faulty {
    async fn push(&self, req: PushRequest) -> Result<PushResponse> {
        if self.offline.load(Ordering::SeqCst) || take(&self.drop_requests) {
            return Err(Error::offline("request lost"));
        }
        if take(&self.server_errors) {
            return Err(Error::Api(converge_core::ApiError::new(converge_core::Code::Internal, "server error")));
        }
        let step = self.during_push.lock().unwrap().take();
        if let Some(step) = step {
            tokio::task::yield_now().await;
            step();
        }
        let resp = self.inner.push(req).await?;
        if resp.replayed {
            self.replays.fetch_add(1, Ordering::SeqCst);
        }
        if take(&self.drop_responses) {
            return Err(Error::offline("response lost"));
        }
        Ok(resp)
    }

    async fn pull(&self, req: PullRequest) -> Result<PullResponse> {
        if self.offline.load(Ordering::SeqCst) || take(&self.drop_pulls) {
            return Err(Error::offline("offline"));
        }
        self.inner.pull(req).await
    }

    async fn record(&self, entity: &str, record_id: &str) -> Result<Change> {
        self.inner.record(entity, record_id).await
    }

    async fn subscribe(&self, cursor: Option<String>) -> Result<converge_core::Subscription> {
        self.inner.subscribe(cursor).await
    }
}
