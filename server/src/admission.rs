//! Load shedding: how many pushes run at once, overall and per tenant, a per-tenant request rate,
//! and the entity types whose batches are let in under pressure.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use converge_core::{ApiError, Code};
use tracing::debug;

/// How long a push refused for concurrency is told to wait.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// What the server lets in at once. Zero or `None` turns a limit off.
///
/// A batch that holds only `critical` entity types is admitted while any of the overall capacity
/// remains: it skips the per-tenant limit and the rate, and normal batches leave a quarter of the
/// overall capacity (at least one push) to it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AdmissionConfig {
    /// Pushes running at once, all tenants together (beyond it: 503 `unavailable`).
    pub max_inflight: usize,
    /// Pushes running at once for one tenant (beyond it: 429 `rate_limited`).
    pub max_inflight_per_tenant: usize,
    /// Requests (pushes and pulls) per second per tenant, a token bucket holding one second's
    /// worth (beyond it: 429 `rate_limited`, Retry-After until the next token).
    pub rate: Option<f64>,
    /// The entity types whose batches are admitted first.
    pub critical: BTreeSet<String>,
}

/// One tenant's load: pushes running, and its token bucket.
struct TenantLoad {
    inflight: usize,
    tokens: f64,
    refilled: Instant,
}

#[derive(Default)]
struct Load {
    inflight: usize,
    tenants: HashMap<String, TenantLoad>,
}

/// The admission state a service shares across its callers.
pub(crate) struct Admission {
    config: AdmissionConfig,
    load: Mutex<Load>,
}

/// A push let in; the slot is given back when it is dropped.
pub(crate) struct Permit<'a> {
    admission: &'a Admission,
    tenant: String,
}

impl Admission {
    pub(crate) fn new(config: AdmissionConfig) -> Admission {
        Admission { config, load: Mutex::new(Load::default()) }
    }

    /// Whether every mutation of the batch is of a critical entity type.
    pub(crate) fn is_critical<'e>(&self, mut entities: impl Iterator<Item = &'e str>) -> bool {
        !self.config.critical.is_empty() && entities.all(|e| self.config.critical.contains(e))
    }

    /// Takes one token from the tenant's bucket, or says how long until one is there.
    fn take_token(&self, load: &mut Load, tenant: &str, now: Instant) -> Result<(), ApiError> {
        let Some(rate) = self.config.rate.filter(|r| *r > 0.0) else { return Ok(()) };
        let burst = rate.max(1.0);
        let t =
            load.tenants.entry(tenant.to_owned()).or_insert(TenantLoad { inflight: 0, tokens: burst, refilled: now });
        t.tokens = (t.tokens + now.duration_since(t.refilled).as_secs_f64() * rate).min(burst);
        t.refilled = now;
        if t.tokens >= 1.0 {
            t.tokens -= 1.0;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((1.0 - t.tokens) / rate);
        debug!(wait_ms = wait.as_millis() as u64, "refused: over the tenant's rate");
        Err(ApiError::new(Code::RateLimited, "too many requests for this tenant; retry after the delay")
            .with_retry_after(wait.max(Duration::from_secs(1))))
    }

    /// A pull, or anything else that only counts against the rate.
    pub(crate) fn request(&self, tenant: &str) -> Result<(), ApiError> {
        let mut load = self.load.lock().unwrap_or_else(PoisonError::into_inner);
        self.take_token(&mut load, tenant, Instant::now())
    }

    /// Lets a push in, or refuses it with the code and delay the caller should see.
    pub(crate) fn push(&self, tenant: &str, critical: bool) -> Result<Permit<'_>, ApiError> {
        let c = &self.config;
        let mut load = self.load.lock().unwrap_or_else(PoisonError::into_inner);
        // Critical batches may use the whole capacity; others leave a quarter of it to them.
        let overall = match (c.max_inflight, critical || c.critical.is_empty()) {
            (0, _) => usize::MAX,
            (max, true) => max,
            (max, false) => max - (max / 4).max(1).min(max - 1),
        };
        if load.inflight >= overall {
            debug!(inflight = load.inflight, critical, "push refused: the server is at capacity");
            return Err(ApiError::new(Code::Unavailable, "the server is at capacity; retry shortly")
                .with_retry_after(BUSY_RETRY_AFTER));
        }
        if !critical {
            let running = load.tenants.get(tenant).map_or(0, |t| t.inflight);
            if c.max_inflight_per_tenant > 0 && running >= c.max_inflight_per_tenant {
                debug!(inflight = running, "push refused: the tenant's pushes are at their limit");
                return Err(ApiError::new(Code::RateLimited, "too many pushes at once for this tenant; retry shortly")
                    .with_retry_after(BUSY_RETRY_AFTER));
            }
            self.take_token(&mut load, tenant, Instant::now())?;
        }
        load.inflight += 1;
        let now = Instant::now();
        let burst = c.rate.unwrap_or(1.0).max(1.0);
        load.tenants
            .entry(tenant.to_owned())
            .or_insert(TenantLoad { inflight: 0, tokens: burst, refilled: now })
            .inflight += 1;
        Ok(Permit { admission: self, tenant: tenant.to_owned() })
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut load = self.admission.load.lock().unwrap_or_else(PoisonError::into_inner);
        load.inflight = load.inflight.saturating_sub(1);
        let rate = self.admission.config.rate;
        if let Some(t) = load.tenants.get_mut(&self.tenant) {
            t.inflight = t.inflight.saturating_sub(1);
            // An idle tenant with a full bucket is forgotten, so the map holds only busy ones.
            let full = rate.is_none_or(|r| t.tokens + t.refilled.elapsed().as_secs_f64() * r >= r.max(1.0));
            if t.inflight == 0 && full {
                load.tenants.remove(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max: usize, per_tenant: usize, rate: Option<f64>) -> Admission {
        Admission::new(AdmissionConfig {
            max_inflight: max,
            max_inflight_per_tenant: per_tenant,
            rate,
            critical: ["payments".to_owned()].into(),
        })
    }

    #[test]
    fn normal_pushes_leave_a_quarter_of_the_capacity_to_critical_ones() {
        let a = admission(8, 0, None);
        let normal: Vec<_> = (0..6).map(|i| a.push(&format!("t{i}"), false).unwrap()).collect();
        let refused = a.push("t9", false).err().unwrap();
        assert_eq!((refused.code, refused.retry_after), (Code::Unavailable, Some(BUSY_RETRY_AFTER)));
        let critical: Vec<_> = (0..2).map(|_| a.push("t9", true).unwrap()).collect();
        assert_eq!(a.push("t9", true).err().unwrap().code, Code::Unavailable, "the whole capacity is in use");
        drop(normal);
        drop(critical);
        assert!(a.load.lock().unwrap().tenants.is_empty(), "idle tenants are forgotten");
        assert!(a.push("t1", false).is_ok());
    }

    #[test]
    fn a_tenant_over_its_share_is_rate_limited_and_critical_batches_pass() {
        let a = admission(100, 2, None);
        let _p = (a.push("t", false).unwrap(), a.push("t", false).unwrap());
        assert_eq!(a.push("t", false).err().unwrap().code, Code::RateLimited);
        assert!(a.push("other", false).is_ok());
        assert!(a.push("t", true).is_ok());
    }

    #[test]
    fn the_rate_is_a_token_bucket_per_tenant() {
        let a = admission(0, 0, Some(5.0));
        for _ in 0..5 {
            a.request("t").unwrap();
        }
        let refused = a.request("t").err().unwrap();
        assert_eq!(refused.code, Code::RateLimited);
        assert_eq!(refused.retry_after, Some(Duration::from_secs(1)));
        assert!(a.request("u").is_ok(), "another tenant has its own bucket");
        assert!(a.push("t", true).is_ok(), "a critical batch skips the rate");
        std::thread::sleep(Duration::from_millis(250));
        assert!(a.request("t").is_ok(), "a token came back after 1/5 s");
    }

    #[test]
    fn no_limits_lets_everything_in() {
        let a = Admission::new(AdmissionConfig::default());
        let permits: Vec<_> = (0..1000).map(|_| a.push("t", false).unwrap()).collect();
        assert_eq!(a.load.lock().unwrap().inflight, 1000);
        drop(permits);
        assert!(!a.is_critical(["payments"].into_iter()), "nothing is critical unless configured");
    }
}
