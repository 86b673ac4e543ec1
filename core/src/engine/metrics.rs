//! Client sync metrics: counted as sync runs, kept in the device store so they survive restarts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Buckets per doubling of the converge-time histogram (about 19 % wide each).
const STEPS_PER_DOUBLING: f64 = 4.0;

/// Retry counts at or above this share the last bucket.
const RETRY_BUCKETS: usize = 11;

/// The raw counters, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metrics {
    /// Sync cycles that completed.
    pub cycles_ok: u64,
    /// Sync cycles that ended in an error.
    pub cycles_failed: u64,
    /// Per entity type: ops the server answered (applied or conflicted) and conflicts among them.
    pub entities: BTreeMap<String, EntityCounts>,
    /// Time from a local write to its acknowledgement: bucket index → count; bucket `i` starts
    /// at `2^(i/4)` ms.
    pub converge_buckets: BTreeMap<u32, u64>,
    /// Unanswered sends before an op was acknowledged: index = retries (the last counts 10 or more).
    pub retries: Vec<u64>,
}

/// Counts of one entity type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityCounts {
    /// Ops answered by the server (applied or conflicted).
    pub answered: u64,
    /// Ops that conflicted.
    pub conflicts: u64,
}

impl Metrics {
    /// Counts one acknowledged op: written at `created_ms`, answered at `now_ms` after `retries`
    /// unanswered sends.
    pub(crate) fn acknowledged(&mut self, entity: &str, conflict: bool, created_ms: u64, now_ms: u64, retries: u32) {
        let e = self.entities.entry(entity.to_owned()).or_default();
        e.answered += 1;
        e.conflicts += u64::from(conflict);
        let ms = now_ms.saturating_sub(created_ms).max(1) as f64;
        *self.converge_buckets.entry((ms.log2() * STEPS_PER_DOUBLING).floor() as u32).or_default() += 1;
        if self.retries.len() < RETRY_BUCKETS {
            self.retries.resize(RETRY_BUCKETS, 0);
        }
        self.retries[(retries as usize).min(RETRY_BUCKETS - 1)] += 1;
    }

    /// Counts a finished sync cycle.
    pub(crate) fn cycle(&mut self, ok: bool) {
        if ok {
            self.cycles_ok += 1;
        } else {
            self.cycles_failed += 1;
        }
    }

    /// The derived figures, with the current outbox depth.
    pub fn report(&self, outbox_depth: u64) -> MetricsReport {
        let cycles = self.cycles_ok + self.cycles_failed;
        MetricsReport {
            outbox_depth,
            cycles,
            success_rate: (cycles > 0).then(|| self.cycles_ok as f64 / cycles as f64),
            conflict_rate: self
                .entities
                .iter()
                .filter(|(_, c)| c.answered > 0)
                .map(|(e, c)| (e.clone(), c.conflicts as f64 / c.answered as f64))
                .collect(),
            median_converge_ms: self.converge_quantile(0.5),
            p90_converge_ms: self.converge_quantile(0.9),
            retries: self.retries.clone(),
            raw: self.clone(),
        }
    }

    /// The converge time at quantile `q`, as the start of its bucket (ms).
    fn converge_quantile(&self, q: f64) -> Option<u64> {
        let total: u64 = self.converge_buckets.values().sum();
        let target = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (&bucket, &n) in &self.converge_buckets {
            seen += n;
            if seen >= target {
                return Some(2f64.powf(f64::from(bucket) / STEPS_PER_DOUBLING).round() as u64);
            }
        }
        None
    }
}

/// What `Engine::metrics` returns: the figures an app or dashboard shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricsReport {
    /// Ops in the outbox not yet acknowledged.
    pub outbox_depth: u64,
    /// Sync cycles run.
    pub cycles: u64,
    /// Completed cycles over all cycles (none before the first cycle).
    pub success_rate: Option<f64>,
    /// Per entity type: conflicts over ops answered.
    pub conflict_rate: BTreeMap<String, f64>,
    /// Median time from a local write to its acknowledgement (ms, ±10 %).
    pub median_converge_ms: Option<u64>,
    /// 90th percentile of the same.
    pub p90_converge_ms: Option<u64>,
    /// How many acknowledged ops needed 0, 1, 2, … retries (the last: 10 or more).
    pub retries: Vec<u64>,
    /// The raw counters.
    pub raw: Metrics,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_from_counts() {
        let mut m = Metrics::default();
        assert_eq!(m.report(0).success_rate, None);
        assert_eq!(m.report(0).median_converge_ms, None);
        for (i, ms) in [10u64, 20, 40, 1000].into_iter().enumerate() {
            m.acknowledged("notes", i == 0, 0, ms, i as u32);
        }
        m.acknowledged("orders", false, 5, 5, 30);
        m.cycle(true);
        m.cycle(true);
        m.cycle(false);
        let r = m.report(7);
        assert_eq!(r.outbox_depth, 7);
        assert_eq!(r.success_rate, Some(2.0 / 3.0));
        assert_eq!(r.conflict_rate["notes"], 0.25);
        assert_eq!(r.conflict_rate["orders"], 0.0);
        // Five samples: 1, 10, 20, 40, 1000 ms; the median is 20 within a bucket's width.
        let median = r.median_converge_ms.unwrap();
        assert!((17..=20).contains(&median), "{median}");
        assert!(r.p90_converge_ms.unwrap() > 800);
        assert_eq!(r.retries, vec![1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1]);
        m.acknowledged("notes", false, 0, 1, 10);
        assert_eq!(m.retries[10], 2);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Metrics>(&json).unwrap(), m);
    }
}
