//! The server store on PostgreSQL: a pool of connections (deadpool-postgres), the schema kept by
//! refinery migrations, a push per transaction under the tenant's counter row lock, and change
//! notices between server nodes through `LISTEN/NOTIFY`. Any number of server processes may share
//! one database.

mod compact;
mod listen;
mod push_tx;
mod rows;
mod schema;
mod shards;

pub use shards::{Placement, ShardedStore, rendezvous};

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use converge_core::server_store::{CompactStats, FeedHead, FeedPage, PushTx, RemoteChange, ServerStore, StoredPush};
use converge_core::wire::Change;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;

use crate::TenantStats;
use crate::error::{Error, Result};

/// The channel pushes notify on; the payload is the tenant.
pub(crate) const CHANNEL: &str = "converge_feed";

/// How a PostgreSQL store connects.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections in the pool (default 16).
    pub pool_size: usize,
    /// How long a request waits for a free connection, or for a new one to connect, before the
    /// store answers busy (the client sees 503 with Retry-After). Default 5 s.
    pub wait: Duration,
    /// Settings for every connection, as `(name, value)` (e.g. `("synchronous_commit", "off")`
    /// to trade the last commits before a crash of PostgreSQL's machine for speed).
    pub settings: Vec<(String, String)>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions { pool_size: 16, wait: Duration::from_secs(5), settings: Vec::new() }
    }
}

/// The PostgreSQL server store. Cheap to clone: clones share the pool and the notice listener.
#[derive(Clone)]
pub struct PgServerStore {
    pool: Pool,
    config: Arc<tokio_postgres::Config>,
    /// The task that listens for other nodes' pushes; stopped when the last clone drops.
    listener: Arc<Mutex<Option<listen::Listener>>>,
}

impl std::fmt::Debug for PgServerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgServerStore").finish_non_exhaustive()
    }
}

impl PgServerStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`, libpq's key=value form
    /// too) and brings the schema up to date, one node at a time (an advisory lock). A database
    /// migrated by a newer build is refused with [`Error::SchemaTooNew`] and left untouched.
    pub async fn connect(url: &str, options: &PgOptions) -> Result<Self> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| Error::InvalidInput(format!("not a PostgreSQL URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.wait);
        }
        // A push waits for the tenant's counter row at most this long (another node's push, a
        // compaction chunk, an operator's transaction), then answers busy: never without bound.
        let mut settings = format!("-c lock_timeout={}", options.wait.as_millis().max(1));
        for (name, value) in &options.settings {
            if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
                || !value.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
            {
                return Err(Error::InvalidInput(format!("not a PostgreSQL setting: {name}={value}")));
            }
            settings.push_str(&format!(" -c {name}={value}"));
        }
        let given = config.get_options().map(str::to_owned);
        config.options(match given {
            Some(given) => format!("{given} {settings}"),
            None => settings,
        });
        if config.get_application_name().is_none() {
            config.application_name("converge-server");
        }
        let manager =
            Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.wait))
            .create_timeout(Some(options.wait))
            .recycle_timeout(Some(options.wait))
            .build()
            .map_err(|e| Error::Pool(e.to_string()))?;
        let mut client = pool.get().await?;
        schema::migrate(&mut client).await?;
        drop(client);
        Ok(PgServerStore { pool, config: Arc::new(config), listener: Arc::new(Mutex::new(None)) })
    }

    /// A pooled connection.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }

    /// The response stored for (tenant, user, key), if any: for tests and inspection.
    pub async fn stored_push(&self, scope: &converge_core::Scope, key: &str) -> Result<Option<StoredPush>> {
        let client = self.client().await?;
        rows::stored_push(&client, &scope.tenant, &scope.user, key).await
    }

    /// A tenant's figures.
    pub async fn stats(&self, tenant: &str) -> Result<TenantStats> {
        let client = self.client().await?;
        rows::stats(&client, tenant).await
    }

    /// Moves the tenant's retention horizon forward to `seq` (never back, never past the current
    /// sequence): cursors older than it get `cursor_expired`. For tests and operators.
    pub async fn advance_horizon(&self, tenant: &str, seq: u64) -> Result<()> {
        let client = self.client().await?;
        let seq = rows::to_i64(seq, "horizon")?;
        client
            .execute(
                "UPDATE counters SET horizon = GREATEST(horizon, LEAST($2, seq)) WHERE tenant = $1",
                &[&tenant, &seq],
            )
            .await?;
        Ok(())
    }

    /// Every tenant this database holds (those with a counter row), in name order.
    pub async fn tenants(&self) -> Result<Vec<String>> {
        let client = self.client().await?;
        compact::tenants(&client).await
    }

    /// Whether the tenant has rows here (a counter row: made by its first push).
    pub async fn holds(&self, tenant: &str) -> Result<bool> {
        let client = self.client().await?;
        Ok(client.query_opt("SELECT 1 FROM counters WHERE tenant = $1", &[&tenant]).await?.is_some())
    }

    /// This database's shard id: a UUID made by the first migration, kept for good.
    pub async fn shard_id(&self) -> Result<uuid::Uuid> {
        let client = self.client().await?;
        Ok(client.query_one("SELECT id FROM shard", &[]).await?.get(0))
    }
}

/// Whether a PostgreSQL error may pass by itself: no connection (refused, closed, timed out), the
/// server starting or shutting down, too many connections, a lock wait past `lock_timeout`, a
/// serialization failure or deadlock.
pub(crate) fn is_retryable(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        None => true,
        Some(code) => {
            let class = &code.code()[..2];
            class == "08"
                || class == "53"
                || class == "57"
                || *code == SqlState::LOCK_NOT_AVAILABLE
                || *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
        }
    }
}

#[async_trait]
impl ServerStore for PgServerStore {
    async fn begin_push(&self, tenant: &str) -> converge_core::Result<Box<dyn PushTx>> {
        Ok(Box::new(push_tx::PgPushTx::begin(self.client().await?, tenant).await?))
    }

    async fn changes(&self, tenant: &str, after: u64, limit: u32) -> converge_core::Result<FeedPage> {
        let client = self.client().await?;
        Ok(rows::changes(&client, tenant, after, limit).await?)
    }

    async fn head(&self, tenant: &str) -> converge_core::Result<FeedHead> {
        let client = self.client().await?;
        let (seq, horizon) = rows::counter(&client, tenant).await?;
        Ok(FeedHead { seq, horizon })
    }

    async fn record(&self, tenant: &str, entity: &str, record_id: &str) -> converge_core::Result<Option<Change>> {
        let client = self.client().await?;
        Ok(rows::record(&client, tenant, entity, record_id).await?)
    }

    async fn compact(&self, older_than_ms: u64) -> converge_core::Result<CompactStats> {
        Ok(compact::compact(self, older_than_ms, compact::CHUNK).await?)
    }

    fn on_remote_change(&self, changed: RemoteChange) {
        let mut listener = self.listener.lock().unwrap_or_else(PoisonError::into_inner);
        *listener = listen::Listener::start(Arc::clone(&self.config), changed);
    }
}
