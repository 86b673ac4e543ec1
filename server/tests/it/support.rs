//! Test helpers: a service over either backend (a SQLite file in a temp dir, or a fresh schema in
//! the test PostgreSQL database), the macro that runs a test on both, and mutation builders.

use std::sync::Arc;

use converge_core::hlc::Hlc;
use converge_core::model::{CheckMode, Op};
use converge_core::server_store::ServerStore;
use converge_core::wire::{Limits, Mutation, PushBatch, PushRequest, PushResponse};
use converge_core::{Scope, SyncApi, Tenancy};
use converge_server::{PgOptions, PgServerStore, SqliteServerStore, SyncService, TenantStats};
use serde_json::Value;
use uuid::Uuid;

/// The store backends every conformance test runs on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// The concrete store, for what only tests ask of it.
#[derive(Clone)]
pub(crate) enum Probe {
    Sqlite(SqliteServerStore),
    Postgres(PgServerStore),
}

/// A service over a fresh store of one backend.
pub(crate) struct Server {
    _dir: tempfile::TempDir,
    pub(crate) store: Arc<dyn ServerStore>,
    pub(crate) probe: Probe,
    pub(crate) service: SyncService,
}

impl Server {
    pub(crate) async fn new(backend: Backend) -> Server {
        Server::with_limits(backend, Limits::default()).await
    }

    pub(crate) async fn with_limits(backend: Backend, limits: Limits) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let (store, probe): (Arc<dyn ServerStore>, Probe) = match backend {
            Backend::Sqlite => {
                let store = SqliteServerStore::open(&dir.path().join("server.db")).unwrap();
                (Arc::new(store.clone()), Probe::Sqlite(store))
            }
            Backend::Postgres => {
                let url = converge_test_support::pg::fresh_url();
                let store = PgServerStore::connect(&url, &PgOptions::default()).await.unwrap();
                (Arc::new(store.clone()), Probe::Postgres(store))
            }
        };
        let service = SyncService::new(Arc::clone(&store), limits);
        Server { _dir: dir, store, probe, service }
    }

    /// A service over `store` (a wrapper of this server's store), sharing nothing else.
    pub(crate) fn service_over(&self, store: Arc<dyn ServerStore>) -> SyncService {
        SyncService::new(store, Limits::default())
    }

    pub(crate) fn api(&self, tenant: &str, user: &str) -> Arc<dyn SyncApi> {
        self.service.scoped(scope(tenant, user))
    }

    pub(crate) async fn stats(&self, tenant: &str) -> TenantStats {
        match &self.probe {
            Probe::Sqlite(s) => s.stats(tenant).unwrap(),
            Probe::Postgres(s) => s.stats(tenant).await.unwrap(),
        }
    }

    pub(crate) async fn advance_horizon(&self, tenant: &str, seq: u64) {
        match &self.probe {
            Probe::Sqlite(s) => s.advance_horizon(tenant, seq).await.unwrap(),
            Probe::Postgres(s) => s.advance_horizon(tenant, seq).await.unwrap(),
        }
    }
}

/// Runs each named `async fn(Backend)` as a test on every backend: `sqlite::name` and
/// `postgres::name`.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Backend::Postgres).await
                }
            )*
        }
    };
}
pub(crate) use on_every_backend;

pub(crate) fn scope(tenant: &str, user: &str) -> Scope {
    Scope::new(tenant, user)
}

pub(crate) fn obj(v: Value) -> converge_core::Fields {
    v.as_object().expect("a JSON object").clone()
}

/// A mutation of `notes/<id>` by device `d1` at HLC millis `ms`.
pub(crate) fn mutation(op: Op, id: &str, base: u64, patch: Value, check: CheckMode, ms: u64) -> Mutation {
    Mutation {
        op_id: Uuid::now_v7(),
        entity: "notes".into(),
        record_id: id.into(),
        op,
        base_version: base,
        patch: obj(patch),
        hlc: Hlc { millis: 1_764_064_800_000 + ms, counter: 0, device: "d1".into() },
        check,
    }
}

pub(crate) fn create(id: &str, patch: Value) -> Mutation {
    mutation(Op::Create, id, 0, patch, CheckMode::Fields, 0)
}

pub(crate) fn update(id: &str, base: u64, patch: Value) -> Mutation {
    mutation(Op::Update, id, base, patch, CheckMode::Fields, 1)
}

pub(crate) fn delete(id: &str, base: u64) -> Mutation {
    mutation(Op::Delete, id, base, serde_json::json!({}), CheckMode::Fields, 2)
}

pub(crate) fn request(key: &str, mutations: Vec<Mutation>) -> PushRequest {
    PushRequest { idempotency_key: key.into(), batch: PushBatch { device_id: "d1".into(), mutations } }
}

/// Pushes under a fresh key and expects success.
pub(crate) async fn push(api: &Arc<dyn SyncApi>, mutations: Vec<Mutation>) -> PushResponse {
    api.push(request(&Uuid::now_v7().to_string(), mutations)).await.unwrap()
}

/// The record's fields as a JSON value.
pub(crate) async fn fields(api: &Arc<dyn SyncApi>, id: &str) -> Value {
    Value::Object(api.record("notes", id).await.unwrap().fields)
}
