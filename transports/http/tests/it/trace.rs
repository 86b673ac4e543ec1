//! A process-wide tracing subscriber that keeps every `trace_id` recorded on a span.
//!
//! It is installed once, before any test builds a router, so no callsite's interest is cached
//! without it (a per-test `set_default` races with tests running in parallel).

use std::sync::{Mutex, Once};

static TRACE_IDS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static INIT: Once = Once::new();

/// Installs the subscriber (first call only).
pub(crate) fn init() {
    INIT.call_once(|| {
        tracing::subscriber::set_global_default(TraceIds).expect("no other global subscriber in this test binary");
    });
}

/// The trace ids recorded so far, by every test.
pub(crate) fn trace_ids() -> Vec<String> {
    TRACE_IDS.lock().unwrap().clone()
}

struct TraceIds;

struct Visit;

impl tracing::field::Visit for Visit {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "trace_id" {
            TRACE_IDS.lock().unwrap().push(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "trace_id" {
            TRACE_IDS.lock().unwrap().push(format!("{value:?}"));
        }
    }
}

impl tracing::Subscriber for TraceIds {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        span.record(&mut Visit);
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        values.record(&mut Visit);
    }

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        event.record(&mut Visit);
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}
