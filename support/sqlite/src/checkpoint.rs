//! The background checkpointer: WAL checkpoints on a thread of their own, so commits never copy
//! pages or wait for an fsync, and a write-ahead log that starts over in place so it stays
//! bounded and its blocks are written again instead of the file growing.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use crate::error::Result;

/// How the write-ahead log of a file is kept.
#[derive(Debug, Clone)]
pub struct WalOptions {
    /// The log's size past which the checkpointer makes it start over in place (default 32 MiB).
    /// Passive checkpoints alone never catch up with a writer that outpaces the disk, so without
    /// this the log grows without bound. A log that overshoots (one very large transaction) is
    /// cut back to twice this size when it starts over.
    pub max_bytes: u64,
    /// How long writes must pause before the log file is truncated to zero bytes, giving its
    /// disk space back (default 30 s).
    pub truncate_after_idle: Duration,
    /// Commits after which the checkpointer runs again (default 200). It looks every few
    /// milliseconds while writes go on; the writer never wakes it, so a commit is never cut
    /// short by the checkpointer's thread taking its CPU.
    pub checkpoint_every_commits: u32,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions { max_bytes: 32 << 20, truncate_after_idle: Duration::from_secs(30), checkpoint_every_commits: 200 }
    }
}

/// How a waiting connection retries a lock another connection holds: every 25 µs for the first
/// 5 ms, then every millisecond up to about 5 s. SQLite's own busy timeout sleeps 1, 2, 5, 10…
/// ms, so a writer that meets a lock held for a fraction of a millisecond would lose a whole one.
/// Install it with `Connection::busy_handler(Some(busy))`.
pub fn busy(count: i32) -> bool {
    const FINE: i32 = 200;
    match count {
        0..FINE => std::thread::sleep(Duration::from_micros(25)),
        FINE..5200 => std::thread::sleep(Duration::from_millis(1)),
        _ => return false,
    }
    true
}

/// The writer's handle on its file's checkpointer thread; dropping it ends the thread and waits for it.
pub struct Checkpointer {
    signal: SyncSender<Signal>,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Checkpointer {
    /// Stops the thread and waits for it: its connection closes (the last one folds the WAL in)
    /// before the store is gone, never while the process exits around it (an encrypted store's
    /// crypto library is torn down at exit).
    fn drop(&mut self) {
        let (closed, _) = sync_channel(0);
        drop(std::mem::replace(&mut self.signal, closed));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the checkpointer's thread is woken for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// Writes started after a pause: look at the commit count every few milliseconds again.
    Look,
    /// Checkpoint now.
    Checkpoint,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer").finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// Turns SQLite's own checkpoints off on `writer` (they would run on its commits), bounds
    /// the log's file size, and starts the checkpointer thread on a connection of its own to
    /// the file at `path`.
    pub fn start(writer: &Connection, path: &Path, options: &WalOptions) -> Result<Checkpointer> {
        Self::start_keyed(writer, path, options, None)
    }

    /// [`Checkpointer::start`] for an encrypted file: `key` is the value of SQLCipher's
    /// `PRAGMA key`, applied to the checkpointer's own connection before its first read.
    pub fn start_keyed(
        writer: &Connection,
        path: &Path,
        options: &WalOptions,
        key: Option<&str>,
    ) -> Result<Checkpointer> {
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        writer.pragma_update(
            None,
            "journal_size_limit",
            options.max_bytes.saturating_mul(2).min(i64::MAX as u64) as i64,
        )?;
        let page = page_size(writer)?;
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        if let Some(key) = key {
            conn.pragma_update(None, "key", key)?;
        }
        conn.busy_handler(Some(busy))?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let mut log = path.as_os_str().to_owned();
        log.push("-wal");
        let plan = Plan {
            restart_frames: (options.max_bytes / page.max(512) as u64).clamp(1, i64::MAX as u64) as i64,
            truncate_after_idle: options.truncate_after_idle,
            every: u64::from(options.checkpoint_every_commits.max(1)),
            log: log.into(),
        };
        let shared = Arc::new(Shared::default());
        let (signal, rx) = sync_channel::<Signal>(4);
        let seen = shared.clone();
        let thread = std::thread::Builder::new()
            .name("converge-checkpoint".into())
            .spawn(move || run(&conn, &rx, &plan, &seen))?;
        Ok(Checkpointer { signal, shared, thread: Some(thread) })
    }

    /// Tells the checkpointer a transaction committed: atomic stores only, except for the first
    /// commit after a pause, which wakes the checkpointer's thread to look again soon.
    pub fn committed(&self) {
        self.shared.mark();
        self.shared.commits.fetch_add(1, Ordering::SeqCst);
        if self.shared.resting.swap(false, Ordering::SeqCst) {
            let _ = self.signal.try_send(Signal::Look);
        }
    }

    /// Asks for a checkpoint now (it runs on the checkpointer's thread; this never waits).
    pub fn nudge(&self) {
        let _ = self.signal.try_send(Signal::Checkpoint);
    }

    /// Called by the writer between transactions, on its own connection: when the log has
    /// passed its bound, copies what the last passive checkpoint left (and syncs), so that the
    /// next commit starts the log over at its first frame, writing over blocks the file already
    /// has (appending to a growing file costs the kernel block allocation and page zeroing on
    /// every commit). Passive checkpoints alone never catch up with a writer that outpaces the
    /// disk, so without this the log would grow without bound. The writer pays this once per
    /// `max_bytes` of log; done by the writer itself, it cannot be starved of the write lock.
    pub fn restart_if_due(&self, writer: &Connection) {
        if !self.shared.restart_due.load(Ordering::Relaxed) {
            return;
        }
        // Busy while the checkpointer thread is still in a passive pass: try again before the
        // next transaction.
        match checkpoint(writer, "RESTART") {
            Ok(done) if !done.busy => self.shared.restart_due.store(false, Ordering::Relaxed),
            Ok(_) => {}
            Err(e) => {
                self.shared.restart_due.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "restarting checkpoint failed");
            }
        }
    }
}

/// What the writer and the checkpointer thread share: when the writer last committed (for the
/// checkpointer to find a pause in the writes), how many commits there were, and whether the
/// log is due to start over.
struct Shared {
    origin: Instant,
    micros: AtomicU64,
    commits: AtomicU64,
    restart_due: AtomicBool,
    /// The checkpointer's thread waits long, until the next commit wakes it.
    resting: AtomicBool,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            origin: Instant::now(),
            micros: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            restart_due: AtomicBool::new(false),
            resting: AtomicBool::new(false),
        }
    }
}

impl Shared {
    fn mark(&self) {
        self.micros.store(self.origin.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        self.origin.elapsed().saturating_sub(Duration::from_micros(self.micros.load(Ordering::Relaxed)))
    }
}

/// What the checkpointer thread needs to know.
struct Plan {
    /// Log frames past which the log is started over.
    restart_frames: i64,
    /// How long writes must pause before the log file is truncated to zero bytes.
    truncate_after_idle: Duration,
    /// Commits after which a passive checkpoint runs.
    every: u64,
    /// The log file.
    log: std::path::PathBuf,
}

/// What a checkpoint reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Checkpointed {
    /// It could not finish: another connection held a lock it needs.
    busy: bool,
    /// The log's size in frames.
    frames: i64,
    /// How many of them are copied into the database file.
    copied: i64,
}

/// Runs a checkpoint (`PASSIVE`, `RESTART` or `TRUNCATE`).
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<Checkpointed> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok(Checkpointed { busy: r.get::<_, i64>(0)? != 0, frames: r.get(1)?, copied: r.get(2)? })
    })
}

/// How long the writer must have paused before the checkpointer starts the log over itself.
const PAUSE: Duration = Duration::from_millis(1);

/// The database's `data_version` as this connection sees it: it changes when another
/// connection commits (this one's own commits leave it as it is).
pub fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0))
}

/// The first salt of a write-ahead log's header (bytes 16..20 of the `-wal` file): it goes up
/// by one each time the log starts over, whichever connection started it over (the header's
/// checkpoint sequence number is counted per connection). `None` while there is no log.
pub fn log_salt(log: &Path) -> Option<u32> {
    use std::io::Read;
    let mut header = [0u8; 20];
    std::fs::File::open(log).ok()?.read_exact(&mut header).ok()?;
    Some(u32::from_be_bytes([header[16], header[17], header[18], header[19]]))
}

/// Starts a fully copied log over with one tiny write on the checkpointer's connection, if no
/// other connection committed since `version` (read before the checkpoint that copied it): the
/// first commit of a new log writes the log's header and syncs it, and done here, that fsync
/// is not one the writer's next commit waits for. The write stores `user_version` unchanged.
/// Returns whether the log started over (a reader in the middle of a read keeps it going).
fn start_log_over(conn: &Connection, version: i64, log: &Path) -> rusqlite::Result<bool> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let before = log_salt(log);
    let rewrite = data_version(conn).and_then(|now| {
        if now != version {
            return Ok(false);
        }
        let user_version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        conn.execute_batch(&format!("PRAGMA user_version = {user_version}")).map(|()| true)
    });
    match rewrite {
        Ok(true) => conn.execute_batch("COMMIT").map(|()| log_salt(log) != before),
        Ok(false) => conn.execute_batch("ROLLBACK").map(|()| false),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// How often the checkpointer looks at the commit count while writes go on.
const LOOK_BUSY: Duration = Duration::from_millis(5);
/// How often it looks when they do not (for a long pause, when the log is truncated).
const LOOK_IDLE: Duration = Duration::from_secs(1);

fn run(conn: &Connection, rx: &Receiver<Signal>, plan: &Plan, shared: &Shared) {
    let (mut seen, mut at_pass, mut truncated_at) = (0u64, 0u64, None);
    loop {
        let now = shared.commits.load(Ordering::SeqCst);
        let mut wait = if now != seen { LOOK_BUSY } else { LOOK_IDLE };
        seen = now;
        if wait == LOOK_IDLE {
            // Rest until a commit wakes this thread; a commit that came in before the flag was
            // up may not have seen it, so look again soon instead.
            shared.resting.store(true, Ordering::SeqCst);
            if shared.commits.load(Ordering::SeqCst) != seen {
                shared.resting.store(false, Ordering::SeqCst);
                wait = LOOK_BUSY;
            }
        }
        let first = rx.recv_timeout(wait);
        shared.resting.store(false, Ordering::SeqCst);
        let nudged = match first {
            Ok(signal) => {
                // Coalesce a burst of signals into one.
                let mut nudged = signal == Signal::Checkpoint;
                while let Ok(more) = rx.try_recv() {
                    nudged |= more == Signal::Checkpoint;
                }
                nudged
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let commits = shared.commits.load(Ordering::Relaxed);
        // A long pause not seen yet, since the last truncation.
        let idle = shared.idle_for() >= plan.truncate_after_idle && truncated_at != Some(commits);
        if !nudged && !idle && commits.wrapping_sub(at_pass) < plan.every {
            continue;
        }
        at_pass = commits;
        if !idle && shared.restart_due.load(Ordering::Relaxed) {
            // The writer finishes this round itself, before its next transaction.
            continue;
        }
        let version = match data_version(conn) {
            Ok(version) => version,
            Err(e) => {
                tracing::warn!(error = %e, "background checkpoint failed");
                continue;
            }
        };
        // The bulk of the work, copying pages and the fsyncs, never holds the writer back.
        let Checkpointed { frames, copied, .. } = match checkpoint(conn, "PASSIVE") {
            Ok(counts) => counts,
            Err(e) => {
                tracing::warn!(error = %e, "background checkpoint failed");
                continue;
            }
        };
        if frames > 0 && shared.idle_for() >= plan.truncate_after_idle {
            // A long pause: give the log's disk space back.
            match checkpoint(conn, "TRUNCATE") {
                Ok(done) if !done.busy => {
                    shared.restart_due.store(false, Ordering::Relaxed);
                    truncated_at = Some(commits);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, frames, "truncating checkpoint failed"),
            }
            continue;
        }
        // The writer paused and the log is copied whole: its next commit would start the log
        // over (and sync the new header); start it over here instead.
        let started_over = frames > 0
            && copied == frames
            && shared.idle_for() >= PAUSE
            && start_log_over(conn, version, &plan.log).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "starting the log over failed");
                false
            });
        if frames > plan.restart_frames && !started_over {
            shared.restart_due.store(true, Ordering::Relaxed);
        }
    }
}

/// The database's page size. SQLCipher answers `PRAGMA page_size` on an encrypted file as text
/// (its `cipher_page_size`); plain SQLite as an integer.
pub fn page_size(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "page_size", |r| match r.get::<_, rusqlite::types::Value>(0)? {
        rusqlite::types::Value::Integer(n) => Ok(n),
        rusqlite::types::Value::Text(t) => t
            .trim()
            .parse()
            .map_err(|_| rusqlite::Error::InvalidColumnType(0, "page_size".into(), rusqlite::types::Type::Text)),
        other => Err(rusqlite::Error::InvalidColumnType(0, "page_size".into(), other.data_type())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_handler_gives_up_after_about_five_seconds() {
        assert!(busy(0) && busy(199) && busy(200));
        assert!(!busy(5200) && !busy(i32::MAX));
    }

    #[test]
    fn a_long_log_starts_over_under_steady_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let writer = Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer.execute_batch("CREATE TABLE t (x)").unwrap();
        let options = WalOptions { max_bytes: 64 << 10, checkpoint_every_commits: 1, ..WalOptions::default() };
        let checkpointer = Checkpointer::start(&writer, &path, &options).unwrap();
        let autocheckpoint: i64 = writer.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0)).unwrap();
        assert_eq!(autocheckpoint, 0, "SQLite's own checkpoints are off the commit path");
        let log = dir.path().join("t.db-wal");
        let first = log_salt(&log);
        let mut restarts = std::collections::BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut i = 0;
        while restarts.len() < 3 {
            restarts.extend(log_salt(&log).filter(|s| Some(*s) != first));
            assert!(Instant::now() < deadline, "the log did not start over ({i} commits)");
            checkpointer.restart_if_due(&writer);
            writer.execute("INSERT INTO t VALUES (zeroblob(3000))", []).unwrap();
            checkpointer.committed();
            i += 1;
        }
        let count: i64 = writer.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(count, i);
    }

    #[test]
    fn a_copied_log_is_started_over_by_the_checkpointer_unless_someone_committed_since() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let log = dir.path().join("t.db-wal");
        let writer = Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        writer.execute_batch("CREATE TABLE t (x); PRAGMA user_version = 3;").unwrap();
        for i in 0..50 {
            writer.execute("INSERT INTO t VALUES (?1)", [i]).unwrap();
        }
        let other = Connection::open(&path).unwrap();
        let version = data_version(&other).unwrap();
        let done = checkpoint(&other, "PASSIVE").unwrap();
        assert_eq!(done.copied, done.frames);
        let salt = log_salt(&log).unwrap();
        // A commit since the checkpoint (the writer starts the copied log over itself): refused.
        writer.execute("INSERT INTO t VALUES (0)", []).unwrap();
        assert_eq!(log_salt(&log), Some(salt + 1));
        assert!(!start_log_over(&other, version, &log).unwrap());
        assert_eq!(checkpoint(&other, "PASSIVE").unwrap().frames, 1, "the writer's frame alone");
        // Copied whole and nobody committed since: started over here.
        let version = data_version(&other).unwrap();
        checkpoint(&other, "PASSIVE").unwrap();
        assert!(start_log_over(&other, version, &log).unwrap());
        assert_eq!(log_salt(&log), Some(salt + 2));
        // A reader in the middle of a read of the log keeps it going: the write is done, not
        // the restart.
        writer.execute("INSERT INTO t VALUES (1)", []).unwrap();
        let reader = Connection::open(&path).unwrap();
        let mut reading = reader.prepare("SELECT x FROM t").unwrap();
        let mut rows = reading.query([]).unwrap();
        rows.next().unwrap();
        let version = data_version(&other).unwrap();
        let done = checkpoint(&other, "PASSIVE").unwrap();
        assert_eq!(done.copied, done.frames);
        assert!(!start_log_over(&other, version, &log).unwrap());
        assert_eq!(log_salt(&log), Some(salt + 2));
        drop(rows);
        let user_version: i64 = writer.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        assert_eq!(user_version, 3, "the rewrite keeps the schema version");
    }
}
