//! Crash points for kill -9 tests: a labelled place in a sync step where a test build can make
//! the process die on the spot, as a power cut or `kill -9` would.
//!
//! With the `crash-points` feature, `CONVERGE_CRASH_AT=label` (or `label:N`, the Nth time the
//! label is reached) aborts the process there: no destructors run, nothing is flushed, open
//! transactions are left to SQLite's recovery. Without the feature every point is a no-op.

/// Every label, in the order a sync cycle reaches them (the last two are the server's).
pub const POINTS: &[&str] = &[
    "write.before_commit",
    "write.after_commit",
    "batch.before_commit",
    "batch.after_commit",
    "send.after_response",
    "ack.before_commit",
    "ack.after_commit",
    "pull.after_fetch",
    "pull.before_cursor",
    "pull.after_commit",
    "resolve.before_commit",
    "resolve.after_commit",
    "server.apply.before_commit",
    "server.apply.after_commit",
];

/// Whether this build has crash points (the `crash-points` feature).
pub const ENABLED: bool = cfg!(feature = "crash-points");

/// The environment variable that names the crash point.
pub const ENV: &str = "CONVERGE_CRASH_AT";

/// Aborts the process if `CONVERGE_CRASH_AT` names `label` (and this is its Nth hit).
#[inline]
pub fn point(label: &'static str) {
    #[cfg(feature = "crash-points")]
    armed::hit(label);
    #[cfg(not(feature = "crash-points"))]
    let _ = label;
}

#[cfg(feature = "crash-points")]
mod armed {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct Target {
        label: String,
        nth: u64,
        hits: AtomicU64,
    }

    fn target() -> Option<&'static Target> {
        static TARGET: OnceLock<Option<Target>> = OnceLock::new();
        TARGET
            .get_or_init(|| {
                let v = std::env::var(super::ENV).ok()?;
                let (label, nth) = match v.split_once(':') {
                    Some((l, n)) => (l.to_owned(), n.parse().unwrap_or(1)),
                    None => (v, 1),
                };
                Some(Target { label, nth, hits: AtomicU64::new(0) })
            })
            .as_ref()
    }

    pub(super) fn hit(label: &'static str) {
        if let Some(t) = target()
            && t.label == label
            && t.hits.fetch_add(1, Ordering::SeqCst) + 1 == t.nth
        {
            eprintln!("crash point {label}: aborting");
            std::process::abort();
        }
    }
}
