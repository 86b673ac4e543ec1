//! What the suite runs against: the service in-process (a `SyncService` on a SQLite file, each
//! call authenticated as the wire adapters do), or a `converge serve` child process reached over
//! HTTP or gRPC, on a SQLite file or on PostgreSQL.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use converge_core::wire::{Change, PullRequest, PullResponse, PushRequest, PushResponse};
use converge_core::{Authenticator, StaticToken, Subscription, SyncApi, Tenancy};
use converge_server::{JwtAuth, SqliteServerStore, SyncService};
use converge_test_support::{SECRET, ServerProcess};

/// Which wire, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    InProcess,
    Http,
    Grpc,
}

/// One system under test.
pub(crate) struct Target {
    pub(crate) wire: Wire,
    auth: JwtAuth,
    service: Option<SyncService>,
    server: Option<ServerProcess>,
    _dir: Option<tempfile::TempDir>,
    db: Db,
}

/// The server's store.
enum Db {
    Sqlite(PathBuf),
    Postgres(String),
}

/// The store's write lock for one tenant, held by a test until released.
pub(crate) enum WriteLock {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

impl WriteLock {
    pub(crate) async fn release(self) {
        match self {
            WriteLock::Sqlite(conn) => conn.execute_batch("ROLLBACK").unwrap(),
            WriteLock::Postgres(client) => client.batch_execute("ROLLBACK").await.unwrap(),
        }
    }
}

impl Target {
    pub(crate) fn in_process() -> Target {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("server.db");
        let store = SqliteServerStore::open(&db).expect("open the server store");
        let service = SyncService::new(Arc::new(store), Default::default());
        Target {
            wire: Wire::InProcess,
            auth: auth(),
            service: Some(service),
            server: None,
            _dir: Some(dir),
            db: Db::Sqlite(db),
        }
    }

    pub(crate) fn http() -> Target {
        Target::process(Wire::Http)
    }

    pub(crate) fn grpc() -> Target {
        Target::process(Wire::Grpc)
    }

    pub(crate) fn http_pg() -> Target {
        Target::pg_process(Wire::Http)
    }

    pub(crate) fn grpc_pg() -> Target {
        Target::pg_process(Wire::Grpc)
    }

    fn process(wire: Wire) -> Target {
        let server = crate::server();
        let db = Db::Sqlite(server.db_path());
        Target { wire, auth: auth(), service: None, server: Some(server), _dir: None, db }
    }

    fn pg_process(wire: Wire) -> Target {
        let url = converge_test_support::pg::fresh_url();
        let server = ServerProcess::start_on(crate::bin(), &url, &[], &[]).expect("start converge serve on PostgreSQL");
        Target { wire, auth: auth(), service: None, server: Some(server), _dir: None, db: Db::Postgres(url) }
    }

    /// Holds the store's write lock for `tenant` until released: SQLite's whole-file lock, or
    /// PostgreSQL's lock on the tenant's counter row.
    pub(crate) async fn hold_write_lock(&self, tenant: &str) -> WriteLock {
        match &self.db {
            Db::Sqlite(path) => {
                let lock = rusqlite::Connection::open(path).unwrap();
                lock.execute_batch("BEGIN IMMEDIATE").unwrap();
                WriteLock::Sqlite(lock)
            }
            Db::Postgres(url) => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(connection);
                client.batch_execute("BEGIN").await.unwrap();
                client
                    .execute(
                        "INSERT INTO counters (tenant) VALUES ($1)
                         ON CONFLICT (tenant) DO UPDATE SET seq = counters.seq",
                        &[&tenant],
                    )
                    .await
                    .unwrap();
                WriteLock::Postgres(client)
            }
        }
    }

    /// A valid token for a tenant and user.
    pub(crate) fn token(&self, tenant: &str, user: &str) -> String {
        self.auth.issue(tenant, user, Duration::from_secs(3600)).expect("token")
    }

    /// A token narrowed to `scope` (space separated words) and `entities`, where given.
    pub(crate) fn scoped_token(
        &self,
        tenant: &str,
        user: &str,
        scope: Option<&str>,
        entities: Option<&[String]>,
    ) -> String {
        self.auth.issue_scoped(tenant, user, Duration::from_secs(3600), scope, entities).expect("token")
    }

    /// The API as a caller holding `token` sees it.
    pub(crate) fn api_with_token(&self, token: &str) -> Arc<dyn SyncApi> {
        match (self.wire, &self.server, &self.service) {
            (Wire::InProcess, _, Some(service)) => {
                Arc::new(Authed { tenancy: service.clone(), auth: auth(), token: token.to_owned() })
            }
            (Wire::Http, Some(server), _) => connect(&server.url(), token),
            (Wire::Grpc, Some(server), _) => connect(&server.grpc_url(), token),
            _ => unreachable!("a target has a service or a server"),
        }
    }

    /// The API for a tenant and user.
    pub(crate) fn api(&self, tenant: &str, user: &str) -> Arc<dyn SyncApi> {
        self.api_with_token(&self.token(tenant, user))
    }
}

fn auth() -> JwtAuth {
    JwtAuth::new(SECRET.as_bytes())
}

fn connect(url: &str, token: &str) -> Arc<dyn SyncApi> {
    converge_connect::connect(url, Arc::new(StaticToken(token.to_owned()))).expect("connect")
}

/// The service in-process, each call authenticated first, as an adapter does.
struct Authed {
    tenancy: SyncService,
    auth: JwtAuth,
    token: String,
}

impl Authed {
    fn scoped(&self) -> converge_core::Result<Arc<dyn SyncApi>> {
        Ok(self.tenancy.scoped(self.auth.authenticate(&self.token)?))
    }
}

#[async_trait]
impl SyncApi for Authed {
    async fn push(&self, req: PushRequest) -> converge_core::Result<PushResponse> {
        self.scoped()?.push(req).await
    }

    async fn pull(&self, req: PullRequest) -> converge_core::Result<PullResponse> {
        self.scoped()?.pull(req).await
    }

    async fn record(&self, entity: &str, record_id: &str) -> converge_core::Result<Change> {
        self.scoped()?.record(entity, record_id).await
    }

    async fn subscribe(&self, cursor: Option<String>) -> converge_core::Result<Subscription> {
        self.scoped()?.subscribe(cursor).await
    }
}
