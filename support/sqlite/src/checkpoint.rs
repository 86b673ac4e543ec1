//! The background checkpointer: WAL checkpoints on a thread of their own, so commits never copy
//! pages or wait for an fsync, and a write-ahead log that starts over in place so it stays
//! bounded and its blocks are written again instead of the file growing.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
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
    /// Commits between two nudges of the checkpointer (default 200).
    pub nudge_every_commits: u32,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions { max_bytes: 32 << 20, truncate_after_idle: Duration::from_secs(30), nudge_every_commits: 200 }
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

/// The writer's handle on its file's checkpointer thread. The thread ends when this is dropped.
pub struct Checkpointer {
    nudge: SyncSender<()>,
    shared: Arc<Shared>,
    commits: AtomicU32,
    every: u32,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer").field("every", &self.every).finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// Turns SQLite's own checkpoints off on `writer` (they would run on its commits), bounds
    /// the log's file size, and starts the checkpointer thread on a connection of its own to
    /// the file at `path`.
    pub fn start(writer: &Connection, path: &Path, options: &WalOptions) -> Result<Checkpointer> {
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        writer.pragma_update(
            None,
            "journal_size_limit",
            options.max_bytes.saturating_mul(2).min(i64::MAX as u64) as i64,
        )?;
        let page: i64 = writer.pragma_query_value(None, "page_size", |r| r.get(0))?;
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        conn.busy_handler(Some(busy))?;
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let plan = Plan {
            restart_frames: (options.max_bytes / page.max(512) as u64).clamp(1, i64::MAX as u64) as i64,
            truncate_after_idle: options.truncate_after_idle,
        };
        let shared = Arc::new(Shared::default());
        let (nudge, rx) = sync_channel::<()>(1);
        let seen = shared.clone();
        std::thread::Builder::new().name("converge-checkpoint".into()).spawn(move || run(&conn, &rx, &plan, &seen))?;
        Ok(Checkpointer { nudge, shared, commits: AtomicU32::new(0), every: options.nudge_every_commits.max(1) })
    }

    /// Tells the checkpointer a transaction committed; every few commits it runs.
    pub fn committed(&self) {
        self.shared.mark();
        let commits = self.commits.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        if commits.is_multiple_of(self.every) {
            self.nudge();
        }
    }

    /// Asks for a checkpoint now (it runs on the checkpointer's thread; this never waits).
    pub fn nudge(&self) {
        let _ = self.nudge.try_send(());
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
        match writer.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get::<_, i64>(0)) {
            Ok(0) => self.shared.restart_due.store(false, Ordering::Relaxed),
            Ok(_) => {}
            Err(e) => {
                self.shared.restart_due.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "restarting checkpoint failed");
            }
        }
    }
}

/// What the writer and the checkpointer thread share: when the writer last committed (for the
/// checkpointer to find a pause in the writes), and whether the log is due to start over.
struct Shared {
    origin: Instant,
    micros: AtomicU64,
    restart_due: AtomicBool,
}

impl Default for Shared {
    fn default() -> Self {
        Shared { origin: Instant::now(), micros: AtomicU64::new(0), restart_due: AtomicBool::new(false) }
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
}

/// Runs a checkpoint; returns the log's size in frames.
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<i64> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get(1))
}

fn run(conn: &Connection, rx: &Receiver<()>, plan: &Plan, shared: &Shared) {
    loop {
        let idle = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(()) => {
                // Coalesce a burst of nudges into one checkpoint.
                while rx.try_recv().is_ok() {}
                false
            }
            Err(RecvTimeoutError::Timeout) if shared.idle_for() >= plan.truncate_after_idle => true,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        if !idle && shared.restart_due.load(Ordering::Relaxed) {
            // The writer finishes this round itself, before its next transaction.
            continue;
        }
        // The bulk of the work, copying pages and the fsyncs, never holds the writer back.
        let frames = match checkpoint(conn, "PASSIVE") {
            Ok(frames) => frames,
            Err(e) => {
                tracing::warn!(error = %e, "background checkpoint failed");
                continue;
            }
        };
        if frames > 0 && shared.idle_for() >= plan.truncate_after_idle {
            // A long pause: give the log's disk space back.
            match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0)) {
                Ok(0) => shared.restart_due.store(false, Ordering::Relaxed),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, frames, "truncating checkpoint failed"),
            }
            continue;
        }
        if frames > plan.restart_frames {
            shared.restart_due.store(true, Ordering::Relaxed);
        }
    }
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
    fn the_writer_starts_a_long_log_over_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let writer = Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer.execute_batch("CREATE TABLE t (x)").unwrap();
        let options = WalOptions { max_bytes: 64 << 10, nudge_every_commits: 1, ..WalOptions::default() };
        let checkpointer = Checkpointer::start(&writer, &path, &options).unwrap();
        let autocheckpoint: i64 = writer.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0)).unwrap();
        assert_eq!(autocheckpoint, 0, "SQLite's own checkpoints are off the commit path");
        let generation = || {
            let bytes = std::fs::read(dir.path().join("t.db-wal")).unwrap();
            u32::from_be_bytes(bytes[12..16].try_into().unwrap())
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut i = 0;
        while generation() < 3 {
            assert!(Instant::now() < deadline, "the log did not start over ({i} commits)");
            checkpointer.restart_if_due(&writer);
            writer.execute("INSERT INTO t VALUES (zeroblob(3000))", []).unwrap();
            checkpointer.committed();
            i += 1;
        }
        let count: i64 = writer.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(count, i);
    }
}
