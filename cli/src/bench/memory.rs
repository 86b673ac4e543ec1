//! Resident memory from `/proc/<pid>/status` (Linux), sampled on a helper thread while a leg
//! runs: at the start, at every 10% of progress, every 100 ms for the peak, and at the end.
//! `VmHWM` is process-wide and never goes down, so a leg's own peak is the largest sample.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the sampler reads the RSS and the progress.
const PERIOD: Duration = Duration::from_millis(100);

/// A field of `/proc/self/status` (or of another process's) in KiB: `VmRSS`, `VmHWM`.
pub(super) fn status_kib(pid: Option<u32>, key: &str) -> Option<u64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.strip_prefix(key).is_some_and(|r| r.starts_with(':')))?;
    line[key.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// This process's resident set now, in KiB.
pub(super) fn rss_kib() -> Option<u64> {
    status_kib(None, "VmRSS")
}

/// KiB as MiB with one decimal.
pub(super) fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// The RSS samples of one leg, in KiB.
#[derive(Debug, Clone)]
pub(super) struct Trace {
    /// Before the leg started.
    pub(super) start: u64,
    /// At each 10% of progress reached (percent, KiB).
    pub(super) marks: Vec<(u64, u64)>,
    /// The largest sample while the leg ran.
    pub(super) peak: u64,
    /// After it finished.
    pub(super) end: u64,
}

impl Trace {
    /// `RSS MiB: start 41.0, 10% 43.2, …, 100% 44.0, end 44.1; peak 45.0`.
    pub(super) fn line(&self) -> String {
        if self.start == 0 {
            return "RSS: not available (no /proc/self/status)".to_owned();
        }
        let marks: Vec<String> = self.marks.iter().map(|(pct, kib)| format!("{pct}% {}", mib(*kib))).collect();
        let mut line = format!("RSS MiB: start {}", mib(self.start));
        for m in &marks {
            line.push_str(", ");
            line.push_str(m);
        }
        line.push_str(&format!(", end {}; peak {}", mib(self.end), mib(self.peak)));
        line
    }

    /// Growth of the peak over the start, in MiB (for the summary lines).
    pub(super) fn growth_mib(&self) -> f64 {
        self.peak.saturating_sub(self.start) as f64 / 1024.0
    }
}

/// Samples the RSS on a helper thread until [`Sampler::finish`].
pub(super) struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Trace>,
}

impl Sampler {
    /// Starts sampling a leg of `total` units; `progress` says how many are done (called from the
    /// helper thread every 100 ms, so it must be cheap).
    pub(super) fn start(total: u64, progress: impl Fn() -> u64 + Send + 'static) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let start = rss_kib().unwrap_or(0);
        let thread = std::thread::spawn(move || {
            let mut trace = Trace { start, marks: Vec::new(), peak: start, end: 0 };
            let mut next = 10;
            loop {
                let done = stopped.load(Ordering::Acquire);
                let rss = rss_kib().unwrap_or(0);
                trace.peak = trace.peak.max(rss);
                let p = progress();
                while next <= 100 && p.saturating_mul(100) >= next * total.max(1) {
                    trace.marks.push((next, rss));
                    next += 10;
                }
                if done {
                    return trace;
                }
                std::thread::park_timeout(PERIOD);
            }
        });
        Sampler { stop, thread }
    }

    /// Stops sampling (after one last sample) and takes the end reading.
    pub(super) fn finish(self) -> Trace {
        self.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
        let mut trace = self.thread.join().unwrap_or_else(|_| Trace { start: 0, marks: Vec::new(), peak: 0, end: 0 });
        trace.end = rss_kib().unwrap_or(0);
        trace.peak = trace.peak.max(trace.end);
        trace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_rss_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(rss_kib().is_some_and(|k| k > 0));
            assert!(status_kib(None, "VmHWM").is_some_and(|k| k > 0));
        }
    }

    #[test]
    fn marks_every_ten_percent_once() {
        let s = Sampler::start(10, || 10);
        let t = s.finish();
        let pcts: Vec<u64> = t.marks.iter().map(|m| m.0).collect();
        assert_eq!(pcts, (1..=10).map(|i| i * 10).collect::<Vec<_>>());
    }
}
