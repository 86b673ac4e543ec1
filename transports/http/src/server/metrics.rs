//! Prometheus metrics of one router, and the middleware that counts, times and traces each
//! request (reading a W3C `traceparent` into the request's span).

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use converge_core::PushResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::Instrument;

use super::AppState;
use crate::problem::TRACEPARENT;

/// The route label of a request that matched no route (keeps label values bounded).
const UNMATCHED: &str = "unmatched";

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteStatus {
    route: String,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Entity {
    entity: String,
}

type HistogramFamily = Family<RouteLabel, Histogram, fn() -> Histogram>;

/// The figures `/metrics` serves.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RouteStatus, Counter>,
    latency: HistogramFamily,
    mutations: Family<Outcome, Counter>,
    conflicts: Family<Entity, Counter>,
    replays: Counter,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RouteStatus, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let mutations = Family::<Outcome, Counter>::default();
        let conflicts = Family::<Entity, Counter>::default();
        let replays = Counter::default();
        registry.register("converge_http_requests", "HTTP requests by route and status", requests.clone());
        registry.register("converge_http_request_duration_seconds", "HTTP request latency by route", latency.clone());
        registry.register("converge_mutations", "Pushed mutations by outcome", mutations.clone());
        registry.register("converge_conflicts", "Conflicting mutations by entity", conflicts.clone());
        registry.register(
            "converge_idempotent_replays",
            "Push responses replayed for a repeated Idempotency-Key",
            replays.clone(),
        );
        Metrics { registry, requests, latency, mutations, conflicts, replays }
    }

    fn observe_request(&self, route: &str, status: u16, elapsed: Duration) {
        self.requests.get_or_create(&RouteStatus { route: route.to_owned(), status }).inc();
        self.latency.get_or_create(&RouteLabel { route: route.to_owned() }).observe(elapsed.as_secs_f64());
    }

    /// Counts a push's outcomes; a replay counts as a replay only (its ops were counted once).
    pub(crate) fn observe_push(&self, resp: &PushResponse) {
        if resp.replayed {
            self.replays.inc();
            return;
        }
        let add = |outcome, n: usize| {
            if n > 0 {
                self.mutations.get_or_create(&Outcome { outcome }).inc_by(n as u64);
            }
        };
        add("accepted", resp.accepted.len());
        add("conflict", resp.conflicts.len());
        add("rejected", resp.rejected.len());
        for c in &resp.conflicts {
            self.conflicts.get_or_create(&Entity { entity: c.entity.clone() }).inc();
        }
    }

    /// The Prometheus (OpenMetrics) text exposition.
    pub(crate) fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Middleware: a span per request (method, route, trace id), then counts and times the answer.
pub(crate) async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or(UNMATCHED, MatchedPath::as_str).to_owned();
    let span = tracing::info_span!(
        "http_request",
        method = %req.method(),
        route = %route,
        trace_id = tracing::field::Empty,
    );
    let traceparent = req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok());
    if let Some(id) = traceparent.and_then(converge_core::api::trace_id_of) {
        span.record("trace_id", id);
    }
    let start = Instant::now();
    let resp = next.run(req).instrument(span.clone()).await;
    let elapsed = start.elapsed();
    let status = resp.status().as_u16();
    state.metrics.observe_request(&route, status, elapsed);
    span.in_scope(|| tracing::debug!(status, latency_ms = elapsed.as_millis() as u64, "request done"));
    resp
}
