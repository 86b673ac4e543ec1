//! The embedded server store on SQLite: one file in WAL mode, one writer connection and a few
//! reader connections (so pulls never wait behind a push), used from `spawn_blocking` so the
//! async service never blocks its runtime.

mod compact;
mod push_tx;
mod rows;
mod schema;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use converge_core::Scope;
use converge_core::server_store::{CompactStats, FeedHead, FeedPage, PushTx, ServerStore, StoredPush};
use converge_core::wire::Change;
use converge_sqlite_support::{Checkpointer, WalOptions};
use rusqlite::Connection;

use crate::TenantStats;
use crate::error::{Error, Result};

/// How long a write waits for another connection's lock before answering busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Reader connections of a file-backed store.
const READERS: usize = 4;

/// The SQLite server store. Cheap to clone: clones share the connections.
#[derive(Clone)]
pub struct SqliteServerStore {
    conn: Arc<Mutex<Connection>>,
    /// Held by whoever has a write transaction open on `conn` (a push's, across its calls, or a
    /// compaction chunk's), so writes never interleave on the one writer connection.
    writer: Arc<tokio::sync::Mutex<()>>,
    readers: Arc<Readers>,
    /// Runs WAL checkpoints off the write path (a file-backed store only).
    checkpointer: Option<Arc<Checkpointer>>,
}

/// Read-only connections; empty for an in-memory store, which reads through the writer.
struct Readers {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

impl std::fmt::Debug for SqliteServerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteServerStore").finish_non_exhaustive()
    }
}

impl SqliteServerStore {
    /// Opens (or creates) the database file at `path` and brings its schema up to date. A file
    /// written by a newer build is refused with [`Error::SchemaTooNew`] and left untouched.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, &WalOptions::default())
    }

    /// [`SqliteServerStore::open`] with the write-ahead log kept as `wal` says: checkpoints run
    /// on a background thread, never on a push's commit.
    pub fn open_with(path: &Path, wal: &WalOptions) -> Result<Self> {
        let mut store = Self::setup(Connection::open(path)?)?;
        let checkpointer = store.with_conn(|conn| Ok(Checkpointer::start(conn, path, wal)?))?;
        store.checkpointer = Some(Arc::new(checkpointer));
        let mut conns = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let conn = Connection::open(path)?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            conn.pragma_update(None, "query_only", true)?;
            conns.push(Mutex::new(conn));
        }
        store.readers = Arc::new(Readers { conns, next: AtomicUsize::new(0) });
        Ok(store)
    }

    /// A store in memory, gone when dropped: for unit tests only.
    pub fn open_in_memory() -> Result<Self> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(mut conn: Connection) -> Result<Self> {
        // A restarting checkpoint waits for readers, and one that truncates the log in a pause
        // holds the writer lock for a moment: wait in small steps.
        conn.busy_handler(Some(converge_sqlite_support::busy))?;
        let _mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        schema::migrate(&mut conn)?;
        Ok(SqliteServerStore {
            conn: Arc::new(Mutex::new(conn)),
            writer: Arc::new(tokio::sync::Mutex::new(())),
            readers: Arc::new(Readers { conns: Vec::new(), next: AtomicUsize::new(0) }),
            checkpointer: None,
        })
    }

    /// Runs `f` with the connection. A panic inside `f` rolls its transaction back as it unwinds,
    /// so a poisoned lock still guards a consistent connection.
    fn with_conn<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut conn)
    }

    /// Runs the write `f` with the connection, telling the checkpointer: before it, the writer
    /// starts a long log over if that is due; after it, a commit is counted.
    fn write<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        self.with_conn(|conn| {
            if let Some(c) = &self.checkpointer {
                c.restart_if_due(conn);
            }
            let out = f(conn);
            if let Some(c) = &self.checkpointer {
                c.committed();
            }
            out
        })
    }

    /// Runs a read on a reader connection (a free one if any), off the async runtime.
    async fn read<T: Send + 'static>(&self, f: impl FnOnce(&Connection) -> Result<T> + Send + 'static) -> Result<T> {
        let this = self.clone();
        // An in-memory store reads through the writer: not inside another's open transaction.
        let token = if self.readers.conns.is_empty() { Some(self.writer.clone().lock_owned().await) } else { None };
        tokio::task::spawn_blocking(move || {
            let _token = token;
            let readers = &this.readers.conns;
            if readers.is_empty() {
                return this.with_conn(|conn| f(conn));
            }
            let free = readers.iter().find_map(|r| r.try_lock().ok());
            let conn = match free {
                Some(conn) => conn,
                None => {
                    let i = this.readers.next.fetch_add(1, Ordering::Relaxed) % readers.len();
                    readers[i].lock().unwrap_or_else(PoisonError::into_inner)
                }
            };
            f(&conn)
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?
    }

    /// Runs the write `f` with the connection on the blocking pool, holding the writer token.
    async fn run<T: Send + 'static>(&self, f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static) -> Result<T> {
        let this = self.clone();
        let token = self.writer.clone().lock_owned().await;
        tokio::task::spawn_blocking(move || {
            let _token = token;
            this.write(f)
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?
    }

    /// The response stored for (scope's tenant and user, key), if any: for tests and inspection
    /// (a push finds a stored key inside its own transaction, see [`PushTx::load`]).
    pub async fn stored_push(&self, scope: &Scope, key: &str) -> Result<Option<StoredPush>> {
        let (scope, key) = (scope.clone(), key.to_owned());
        self.read(move |conn| rows::stored_push(conn, &scope.tenant, &scope.user, &key)).await
    }

    /// A tenant's figures (blocking: a short read, on a reader connection of a file-backed store
    /// so it never sees a push's uncommitted rows).
    pub fn stats(&self, tenant: &str) -> Result<TenantStats> {
        let stats = |conn: &Connection| {
            let (seq, horizon) = rows::counter(conn, tenant)?;
            let (sum, count): (i64, i64) = conn
                .prepare_cached("SELECT COALESCE(SUM(version), 0), COUNT(*) FROM records WHERE tenant = ?1")?
                .query_row([tenant], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(TenantStats {
                seq,
                version_sum: rows::to_u64(sum, "sum of versions")?,
                records: rows::to_u64(count, "record count")?,
                horizon,
            })
        };
        match self.readers.conns.first() {
            Some(reader) => stats(&reader.lock().unwrap_or_else(PoisonError::into_inner)),
            None => self.with_conn(|conn| stats(conn)),
        }
    }

    /// Moves the tenant's retention horizon forward to `seq` (never back, never past the current
    /// sequence): cursors older than it get `cursor_expired`. Compaction moves the horizon itself,
    /// in the transaction that removes tombstones; this is for tests and operators.
    pub async fn advance_horizon(&self, tenant: &str, seq: u64) -> Result<()> {
        let (tenant, seq) = (tenant.to_owned(), rows::to_i64(seq, "horizon")?);
        self.run(move |conn| {
            let tenant = tenant.as_str();
            rows::ensure_counter(conn, tenant)?;
            conn.prepare_cached("UPDATE counters SET horizon = MAX(horizon, MIN(?2, seq)) WHERE tenant = ?1")?
                .execute(rusqlite::params![tenant, seq])?;
            Ok(())
        })
        .await
    }

    /// [`ServerStore::compact`] with chunks of about `chunk` rows per write transaction (see
    /// [`compact::CHUNK`]). Per tenant (every tenant with a counter row), a read first finds which
    /// kinds have old rows; each of those is then removed chunk by chunk, the writer released
    /// between chunks so pushes interleave.
    async fn compact_in_chunks(&self, older_than_ms: u64, chunk: u32) -> Result<CompactStats> {
        // A cutoff past what SQLite holds is later than any stored time.
        let cutoff = i64::try_from(older_than_ms).unwrap_or(i64::MAX);
        let mut stats = CompactStats::default();
        for tenant in self.read(compact::tenants).await? {
            let due = {
                let tenant = tenant.clone();
                self.read(move |conn| compact::due(conn, &tenant, cutoff)).await?
            };
            let mut removed_here = false;
            for kind in due {
                loop {
                    let tenant = tenant.clone();
                    let removed = self.run(move |conn| compact::chunk(conn, kind, &tenant, cutoff, chunk)).await?;
                    stats.tombstones += removed.tombstones;
                    stats.op_results += removed.op_results;
                    stats.idempotency_keys += removed.idempotency_keys;
                    removed_here |= removed != compact::Removed::default();
                    if !removed.full {
                        break;
                    }
                }
            }
            if removed_here {
                stats.tenants += 1;
            }
        }
        Ok(stats)
    }
}

#[async_trait]
impl ServerStore for SqliteServerStore {
    async fn begin_push(&self, tenant: &str) -> converge_core::Result<Box<dyn PushTx>> {
        Ok(Box::new(push_tx::SqlitePushTx::begin(self.clone(), tenant).await))
    }

    async fn changes(&self, tenant: &str, after: u64, limit: u32) -> converge_core::Result<FeedPage> {
        let tenant = tenant.to_owned();
        Ok(self.read(move |conn| rows::changes(conn, &tenant, after, limit)).await?)
    }

    async fn head(&self, tenant: &str) -> converge_core::Result<FeedHead> {
        let tenant = tenant.to_owned();
        let (seq, horizon) = self.read(move |conn| rows::counter(conn, &tenant)).await?;
        Ok(FeedHead { seq, horizon })
    }

    async fn record(&self, tenant: &str, entity: &str, record_id: &str) -> converge_core::Result<Option<Change>> {
        let (tenant, entity, record_id) = (tenant.to_owned(), entity.to_owned(), record_id.to_owned());
        Ok(self.read(move |conn| rows::record(conn, &tenant, &entity, &record_id)).await?)
    }

    /// In chunks of about 10,000 rows per write transaction (see [`compact::CHUNK`]).
    async fn compact(&self, older_than_ms: u64) -> converge_core::Result<CompactStats> {
        Ok(self.compact_in_chunks(older_than_ms, compact::CHUNK).await?)
    }
}

#[cfg(test)]
mod tests;
