//! `SqliteStore`: opening the file (WAL, migrations, corruption handling), transactions, and a
//! background checkpointer that keeps WAL checkpoints off the write path.

use std::path::{Path, PathBuf};

use converge_core::store::{
    ConflictRecord, DeviceState, LocalRecord, LocalStore, OutboxOp, StoreRead, StoreTx, Summary,
};
use converge_core::{Hlc, Result as CoreResult};
use rusqlite::{Connection, TransactionBehavior};

use crate::error::{Error, Result, is_corruption};
use crate::key::{self, Key};
use crate::rows;
use crate::schema;
use converge_sqlite_support::{Checkpointer, WalOptions};

/// How to open a store.
#[derive(Debug, Clone)]
pub struct Options {
    /// Run WAL checkpoints on a background thread (`true`, the default), or let SQLite run them on
    /// the committing write every 1000 pages (SQLite's own default; for comparison in benchmarks).
    pub background_checkpoints: bool,
    /// How the background checkpointer keeps the write-ahead log (its size bound, when it is
    /// truncated, how often it runs).
    pub wal: WalOptions,
    /// The device id for a new store (default: made up at random).
    pub device_id: Option<String>,
    /// SQLite's page cache, in KiB (default 8 MiB: fewer WAL-index lookups on the write path).
    pub cache_kib: u32,
    /// The most bytes the database file may grow to (a quota; default: no limit). A write that
    /// would pass it fails with `converge_core::Error::StoreFull`, like a full disk, and changes
    /// nothing.
    pub max_bytes: Option<u64>,
    /// The key of an encrypted store (SQLCipher; needs the `encryption` feature). A new store
    /// opened with a key is encrypted: its database, WAL and journal files hold no readable
    /// record. `None`: a plain store.
    pub key: Option<Key>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            background_checkpoints: true,
            wal: WalOptions::default(),
            device_id: None,
            cache_kib: 8192,
            max_bytes: None,
            key: None,
        }
    }
}

/// The device store: one SQLite file in WAL mode.
pub struct SqliteStore {
    conn: Connection,
    /// Transactions this store committed (SQLite's `data_version` counts only the others').
    commits: u64,
    path: PathBuf,
    checkpointer: Option<Checkpointer>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish_non_exhaustive()
    }
}

/// Settings every connection to the file gets.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_handler(Some(converge_sqlite_support::busy))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

impl SqliteStore {
    /// An app's own small value kept beside its data under `key` (the CLI keeps a device's
    /// merge policies here), if set.
    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        use rusqlite::OptionalExtension as _;
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM settings WHERE key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?)
    }

    /// Sets the value under `key`, or with `None` removes it; in a transaction of its own.
    pub fn set_setting(&mut self, key: &str, value: Option<&str>) -> Result<()> {
        match value {
            Some(v) => self
                .conn
                .prepare_cached(
                    "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
                )?
                .execute([key, v])?,
            None => self.conn.prepare_cached("DELETE FROM settings WHERE key = ?1")?.execute([key])?,
        };
        self.commits = self.commits.wrapping_add(1);
        Ok(())
    }

    /// Opens (or creates) the store at `path` with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore> {
        Self::open_with(path, Options::default())
    }

    /// Opens (or creates) the store at `path`. A file that is not a usable database is moved
    /// aside (never deleted) and reported as [`Error::Corrupt`], except one that looks
    /// encrypted: without a key that is [`Error::KeyRequired`], with the wrong key
    /// [`Error::WrongKey`], and the file is left as it is.
    pub fn open_with(path: impl AsRef<Path>, options: Options) -> Result<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        // Judged before a connection opens: its close could fold the WAL into the file, and a
        // file that is not ours to read is left exactly as it is.
        if options.key.is_none() && key::looks_encrypted(&path) {
            return Err(Error::KeyRequired);
        }
        match Self::try_open(&path, &options) {
            Err(Error::Sqlite(e)) if is_corruption(&e) => Err(move_aside(&path, e.to_string())?),
            other => other,
        }
    }

    fn try_open(path: &Path, options: &Options) -> Result<SqliteStore> {
        let mut conn = Connection::open(path)?;
        if let Some(key) = &options.key {
            key::apply(&conn, key)?;
        }
        configure(&conn)?;
        conn.pragma_update(None, "cache_size", -i64::from(options.cache_kib))?;
        if let Some(max) = options.max_bytes {
            let page = converge_sqlite_support::page_size(&conn)?;
            conn.pragma_update(None, "max_page_count", (max as i64 / page).max(1))?;
        }
        let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if found > schema::LATEST {
            return Err(Error::TooNew { found, known: schema::LATEST });
        }
        let check: String = conn.pragma_query_value(None, "quick_check", |r| r.get(0))?;
        if check != "ok" {
            drop(conn);
            return Err(move_aside(path, check)?);
        }
        schema::migrations().to_latest(&mut conn)?;
        let device = options.device_id.clone().unwrap_or_else(|| {
            let id = uuid::Uuid::now_v7().simple().to_string();
            format!("dev-{}", &id[20..])
        });
        converge_core::hlc::validate_device_id(&device).map_err(|e| Error::Malformed(e.to_string()))?;
        conn.execute("INSERT OR IGNORE INTO sync_state (id, device_id) VALUES (1, ?1)", [&device])?;
        let key = options.key.as_ref().map(Key::pragma_value);
        let checkpointer = if options.background_checkpoints {
            Some(Checkpointer::start_keyed(&conn, path, &options.wal, key.as_deref())?)
        } else {
            None
        };
        Ok(SqliteStore { conn, commits: 0, path: path.to_path_buf(), checkpointer })
    }

    /// The store file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Changes the key of the closed store at `path`: from `old` (`None`: a plain store) to `new`
    /// (`None`: decrypt). Everything in it is kept, pending ops too. The store is copied into a
    /// new file under the new key, which then replaces the old one in one rename: a crash leaves
    /// either the old file or the new one, whole.
    pub fn rekey(path: impl AsRef<Path>, old: Option<&Key>, new: Option<&Key>) -> Result<()> {
        let path = path.as_ref();
        if old.is_none() && new.is_none() {
            return Ok(());
        }
        if !key::ENCRYPTION {
            return Err(Error::BadKey("this build cannot encrypt: no `encryption` feature".into()));
        }
        // Open it as the app would: checks the old key and brings the schema up to date.
        let options = Options { key: old.cloned(), background_checkpoints: false, ..Options::default() };
        let store = SqliteStore::open_with(path, options)?;
        let conn = store.conn;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".rekey");
        let tmp = PathBuf::from(tmp);
        let _ = std::fs::remove_file(&tmp);
        let new_key = new.map(Key::pragma_value).unwrap_or_default();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let tmp_text = tmp.to_str().ok_or_else(|| Error::BadKey("the store's path is not UTF-8".into()))?;
        conn.execute("ATTACH DATABASE ?1 AS rekeyed KEY ?2", [tmp_text, new_key.as_str()])?;
        conn.query_row("SELECT sqlcipher_export('rekeyed')", [], |_| Ok(()))?;
        conn.pragma_update(Some("rekeyed"), "user_version", version)?;
        conn.execute("DETACH DATABASE rekeyed", [])?;
        drop(conn);
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        for ext in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(ext);
            let _ = std::fs::remove_file(PathBuf::from(side));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Runs `PRAGMA integrity_check`; `Ok(())` when the file is sound.
    pub fn integrity_check(&self) -> Result<()> {
        let r: String = self.conn.pragma_query_value(None, "integrity_check", |r| r.get(0))?;
        if r == "ok" { Ok(()) } else { Err(Error::Malformed(format!("integrity_check: {r}"))) }
    }
}

/// Renames a damaged file (and its WAL and shm) to `<name>.corrupt-<unix ms>`.
fn move_aside(path: &Path, reason: String) -> Result<Error> {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let mut moved = path.as_os_str().to_owned();
    moved.push(format!(".corrupt-{ms}"));
    let moved_to = PathBuf::from(moved);
    std::fs::rename(path, &moved_to)?;
    for ext in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(ext);
        let mut dest = moved_to.as_os_str().to_owned();
        dest.push(ext);
        if Path::new(&side).exists() {
            std::fs::rename(&side, &dest)?;
        }
    }
    tracing::error!(moved_to = %moved_to.display(), "device store was corrupt and was moved aside");
    Ok(Error::Corrupt { reason, moved_to })
}

macro_rules! impl_read {
    ($t:ty, $conn:ident => $get:expr, $commits:expr) => {
        impl StoreRead for $t {
            fn device_state(&self) -> CoreResult<DeviceState> {
                let $conn = self;
                Ok(rows::device_state($get)?)
            }
            fn data_version(&self) -> CoreResult<u64> {
                let $conn = self;
                let others = converge_sqlite_support::data_version($get).map_err(Error::from)?;
                Ok((others as u64).wrapping_add($commits))
            }
            fn max_outbox_hlc(&self) -> CoreResult<Option<Hlc>> {
                let $conn = self;
                Ok(rows::max_outbox_hlc($get)?)
            }
            fn record(&self, entity: &str, record_id: &str) -> CoreResult<Option<LocalRecord>> {
                let $conn = self;
                Ok(rows::record($get, entity, record_id)?)
            }
            fn list(&self, entity: &str) -> CoreResult<Vec<LocalRecord>> {
                let $conn = self;
                Ok(rows::list($get, entity)?)
            }
            fn record_ops(&self, entity: &str, record_id: &str) -> CoreResult<Vec<OutboxOp>> {
                let $conn = self;
                Ok(rows::record_ops($get, entity, record_id)?)
            }
            fn in_flight(&self) -> CoreResult<Vec<OutboxOp>> {
                let $conn = self;
                Ok(rows::in_flight($get)?)
            }
            fn next_ops(&self, limit: usize, first: &[String]) -> CoreResult<Vec<OutboxOp>> {
                let $conn = self;
                Ok(rows::next_ops($get, limit, first)?)
            }
            fn summary(&self) -> CoreResult<Summary> {
                let $conn = self;
                Ok(rows::summary($get)?)
            }
            fn oldest_pending_ms(&self) -> CoreResult<Option<u64>> {
                let $conn = self;
                Ok(rows::oldest_pending_ms($get)?)
            }
            fn held_ops(&self) -> CoreResult<Vec<OutboxOp>> {
                let $conn = self;
                Ok(rows::held_ops($get)?)
            }
            fn op(&self, op_id: uuid::Uuid) -> CoreResult<Option<OutboxOp>> {
                let $conn = self;
                Ok(rows::op($get, op_id)?)
            }
            fn snapshot_active(&self) -> CoreResult<bool> {
                let $conn = self;
                Ok(rows::snapshot_active($get)?)
            }
            fn conflicts(&self, open: bool) -> CoreResult<Vec<ConflictRecord>> {
                let $conn = self;
                Ok(rows::conflicts($get, open)?)
            }
            fn conflict(&self, id: i64) -> CoreResult<Option<ConflictRecord>> {
                let $conn = self;
                Ok(rows::conflict($get, id)?)
            }
        }
    };
}

impl_read!(SqliteStore, s => &s.conn, s.commits);
impl_read!(Tx<'_>, t => &t.0, t.1);

/// A write transaction of the store, with the store's commit count at its start.
struct Tx<'a>(rusqlite::Transaction<'a>, u64);

impl StoreTx for Tx<'_> {
    fn put_record(&mut self, record: &LocalRecord) -> CoreResult<()> {
        rows::put_record(&self.0, record, true)?;
        Ok(())
    }
    fn insert_new_record(&mut self, record: &LocalRecord) -> CoreResult<bool> {
        Ok(rows::put_record(&self.0, record, false)?)
    }
    fn remove_record(&mut self, entity: &str, record_id: &str) -> CoreResult<()> {
        Ok(rows::remove_record(&self.0, entity, record_id)?)
    }
    fn insert_op(&mut self, op: &OutboxOp) -> CoreResult<i64> {
        Ok(rows::insert_op(&self.0, op)?)
    }
    fn update_op(&mut self, op: &OutboxOp) -> CoreResult<()> {
        Ok(rows::update_op(&self.0, op)?)
    }
    fn remove_op(&mut self, seq: i64) -> CoreResult<()> {
        Ok(rows::remove_op(&self.0, seq)?)
    }
    fn confirm_sole_op(&mut self, entity: &str, record_id: &str, seq: i64, version: u64) -> CoreResult<bool> {
        Ok(rows::confirm_sole_op(&self.0, entity, record_id, seq, version)?)
    }
    fn mark_in_flight(&mut self, seqs: &[i64], batch_id: &str) -> CoreResult<()> {
        Ok(rows::mark_in_flight(&self.0, seqs, batch_id)?)
    }
    fn insert_conflict(&mut self, conflict: &ConflictRecord) -> CoreResult<i64> {
        Ok(rows::write_conflict(&self.0, conflict, true)?)
    }
    fn update_conflict(&mut self, conflict: &ConflictRecord) -> CoreResult<()> {
        rows::write_conflict(&self.0, conflict, false)?;
        Ok(())
    }
    fn set_device_state(&mut self, state: &DeviceState) -> CoreResult<()> {
        Ok(rows::set_device_state(&self.0, state)?)
    }
    fn snapshot_begin(&mut self) -> CoreResult<()> {
        Ok(rows::snapshot_begin(&self.0)?)
    }
    fn snapshot_seen(&mut self, entity: &str, record_id: &str) -> CoreResult<()> {
        Ok(rows::snapshot_seen(&self.0, entity, record_id)?)
    }
    fn snapshot_take(&mut self, limit: usize) -> CoreResult<Vec<(String, String)>> {
        Ok(rows::snapshot_take(&self.0, limit)?)
    }
}

impl LocalStore for SqliteStore {
    fn transact(&mut self, f: &mut dyn FnMut(&mut dyn StoreTx) -> CoreResult<()>) -> CoreResult<()> {
        if let Some(c) = &self.checkpointer {
            c.restart_if_due(&self.conn);
        }
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(Error::from)?;
        let mut tx = Tx(tx, self.commits);
        f(&mut tx)?;
        tx.0.commit().map_err(Error::from)?;
        self.commits = self.commits.wrapping_add(1);
        if let Some(c) = &self.checkpointer {
            c.committed();
        }
        Ok(())
    }

    fn checkpoint(&mut self) -> CoreResult<()> {
        match &self.checkpointer {
            Some(c) => {
                c.nudge();
                Ok(())
            }
            None => {
                self.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())).map_err(Error::from)?;
                Ok(())
            }
        }
    }
}
