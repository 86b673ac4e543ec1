//! An in-memory `Tenancy` and `Authenticator` for this crate's tests (the real service is tested
//! end to end elsewhere): enough behaviour to tell the adapters' answers apart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use converge_core::wire::{Accepted, ConflictOutcome, Rejected, ServerState};
use converge_core::{
    ApiError, Authenticator, Change, Code, Op, PullRequest, PullResponse, PushRequest, PushResponse, Scope, SyncApi,
    Tenancy,
};

/// Tokens: `good` (tenant t1), `other` (tenant t2), `expired`; anything else is unauthorized.
pub(crate) struct FakeAuth;

impl Authenticator for FakeAuth {
    fn authenticate(&self, bearer: &str) -> Result<Scope, ApiError> {
        let scope = |tenant: &str, user: &str| Scope::new(tenant, user);
        match bearer {
            "good" => Ok(scope("t1", "u1")),
            "other" => Ok(scope("t2", "u2")),
            "expired" => Err(ApiError::new(Code::TokenExpired, "the token has expired")),
            _ => Err(ApiError::new(Code::Unauthorized, "bad token")),
        }
    }
}

#[derive(Default)]
struct Inner {
    records: HashMap<(String, String, String), Change>,
    feed: Vec<(String, Change)>,
    replies: HashMap<(String, String), PushResponse>,
    fail_next: Option<converge_core::Error>,
    delay: Option<Duration>,
    last_pull: Option<PullRequest>,
}

/// The fake service, shared by every scope it hands out.
#[derive(Clone, Default)]
pub(crate) struct Fake(Arc<Mutex<Inner>>);

impl Fake {
    /// The next call (any method) fails with `e`.
    pub(crate) fn fail_next(&self, e: impl Into<converge_core::Error>) {
        self.0.lock().unwrap().fail_next = Some(e.into());
    }

    /// Every call waits this long first.
    pub(crate) fn set_delay(&self, d: Duration) {
        self.0.lock().unwrap().delay = Some(d);
    }

    /// The last pull request the service saw.
    pub(crate) fn last_pull(&self) -> Option<PullRequest> {
        self.0.lock().unwrap().last_pull.clone()
    }

    /// How many records the service holds (all tenants).
    pub(crate) fn record_count(&self) -> usize {
        self.0.lock().unwrap().records.len()
    }

    async fn begin(&self) -> converge_core::Result<()> {
        let delay = self.0.lock().unwrap().delay;
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        match self.0.lock().unwrap().fail_next.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Tenancy for Fake {
    fn scoped(&self, scope: Scope) -> Arc<dyn SyncApi> {
        Arc::new(Scoped { fake: self.clone(), scope })
    }
}

struct Scoped {
    fake: Fake,
    scope: Scope,
}

#[async_trait]
impl SyncApi for Scoped {
    async fn push(&self, req: PushRequest) -> converge_core::Result<PushResponse> {
        self.fake.begin().await?;
        let tenant = self.scope.tenant.clone();
        let mut inner = self.fake.0.lock().unwrap();
        if let Some(stored) = inner.replies.get(&(tenant.clone(), req.idempotency_key.clone())) {
            return Ok(PushResponse { replayed: true, ..stored.clone() });
        }
        let mut resp = PushResponse::default();
        for m in req.batch.mutations {
            let key = (tenant.clone(), m.entity.clone(), m.record_id.clone());
            let existing = inner.records.get(&key).cloned();
            let change = match (m.op, existing) {
                (Op::Create, Some(server)) => {
                    resp.conflicts.push(ConflictOutcome {
                        op_id: m.op_id,
                        entity: m.entity,
                        record_id: m.record_id,
                        fields: m.patch.keys().cloned().collect(),
                        server: ServerState {
                            version: server.version,
                            fields: server.fields,
                            deleted: server.deleted,
                            meta: Default::default(),
                        },
                    });
                    continue;
                }
                (Op::Create, None) => Change {
                    entity: m.entity.clone(),
                    record_id: m.record_id.clone(),
                    version: 1,
                    fields: m.patch,
                    deleted: false,
                },
                (_, None) => {
                    resp.rejected.push(Rejected {
                        op_id: m.op_id,
                        code: Code::NotFound,
                        message: "no such record".into(),
                        retryable: false,
                    });
                    continue;
                }
                (op, Some(mut c)) => {
                    c.version += 1;
                    c.deleted = op == Op::Delete;
                    converge_core::model::apply_patch(&mut c.fields, &m.patch);
                    c
                }
            };
            resp.accepted.push(Accepted {
                op_id: m.op_id,
                entity: change.entity.clone(),
                record_id: change.record_id.clone(),
                version: change.version,
            });
            inner.records.insert(key, change.clone());
            inner.feed.push((tenant.clone(), change));
        }
        inner.replies.insert((tenant, req.idempotency_key), resp.clone());
        Ok(resp)
    }

    async fn pull(&self, req: PullRequest) -> converge_core::Result<PullResponse> {
        self.fake.begin().await?;
        let mut inner = self.fake.0.lock().unwrap();
        inner.last_pull = Some(req.clone());
        let start = match req.cursor.as_deref() {
            None => 0,
            Some("expired") => {
                return Err(ApiError::new(Code::CursorExpired, "re-sync from a snapshot").into());
            }
            Some(c) => c.parse::<usize>().map_err(|_| ApiError::invalid("bad cursor"))?,
        };
        let limit = req.limit.unwrap_or(500) as usize;
        let mine: Vec<(usize, &Change)> = inner
            .feed
            .iter()
            .enumerate()
            .filter(|(i, (t, _))| *i >= start && *t == self.scope.tenant)
            .map(|(i, (_, c))| (i, c))
            .collect();
        let page: Vec<(usize, &Change)> = mine.iter().take(limit).copied().collect();
        let cursor = page.last().map_or(start, |(i, _)| i + 1);
        Ok(PullResponse {
            changes: page.iter().map(|(_, c)| (*c).clone()).collect(),
            cursor: cursor.to_string(),
            has_more: mine.len() > page.len(),
        })
    }

    async fn record(&self, entity: &str, record_id: &str) -> converge_core::Result<Change> {
        self.fake.begin().await?;
        let inner = self.fake.0.lock().unwrap();
        let key = (self.scope.tenant.clone(), entity.to_owned(), record_id.to_owned());
        inner.records.get(&key).cloned().ok_or_else(|| ApiError::new(Code::NotFound, "no such record").into())
    }

    async fn subscribe(&self, _cursor: Option<String>) -> converge_core::Result<converge_core::Subscription> {
        Err(converge_core::Error::Unsupported("the fake serves no notices".into()))
    }
}
