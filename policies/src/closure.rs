//! Closures as policies: an app registers a Rust function exactly like a built-in.

use std::fmt;
use std::sync::Arc;

use converge_core::{CheckMode, MergeInput, MergePolicy, Resolution};

/// A [`MergePolicy`] made of a name, a check mode and a function.
///
/// The function must be pure and deterministic like every policy: the same input must give the
/// same answer on every device (no clock, no randomness, no I/O).
///
/// ```
/// use converge_core::{CheckMode, MergePolicy, Resolution};
/// use converge_policies::FnPolicy;
///
/// let keep_server = FnPolicy::new("keep_server", CheckMode::Fields, |_| Resolution::TakeServer);
/// assert_eq!(keep_server.name(), "keep_server");
/// ```
pub struct FnPolicy<F> {
    name: String,
    check: CheckMode,
    resolve: F,
}

impl<F> FnPolicy<F>
where
    F: Fn(&MergeInput<'_>) -> Resolution + Send + Sync,
{
    /// A policy named `name` (as the conflict journal records it) whose mutations carry `check`.
    pub fn new(name: impl Into<String>, check: CheckMode, resolve: F) -> FnPolicy<F> {
        FnPolicy { name: name.into(), check, resolve }
    }
}

impl<F> fmt::Debug for FnPolicy<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnPolicy").field("name", &self.name).field("check", &self.check).finish_non_exhaustive()
    }
}

impl<F> MergePolicy for FnPolicy<F>
where
    F: Fn(&MergeInput<'_>) -> Resolution + Send + Sync,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn check_mode(&self) -> CheckMode {
        self.check
    }

    fn resolve(&self, input: &MergeInput<'_>) -> Resolution {
        (self.resolve)(input)
    }
}

/// A closure as a shareable policy, ready to register for an entity type like a built-in.
///
/// ```
/// use converge_core::{CheckMode, Resolution};
/// use converge_policies::policy_fn;
///
/// let policy = policy_fn("prices", CheckMode::Record, |input| {
///     if input.conflicting.iter().any(|f| f == "price") {
///         Resolution::NeedsReview { reason: "the price changed".into() }
///     } else {
///         Resolution::TakeLocal
///     }
/// });
/// assert_eq!(policy.name(), "prices");
/// assert_eq!(policy.check_mode(), CheckMode::Record);
/// ```
pub fn policy_fn(
    name: &str,
    check: CheckMode,
    f: impl Fn(&MergeInput<'_>) -> Resolution + Send + Sync + 'static,
) -> Arc<dyn MergePolicy> {
    Arc::new(FnPolicy::new(name, check, f))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use converge_core::{Fields, Hlc};
    use serde_json::json;

    use super::*;

    #[test]
    fn the_closure_sees_the_input_and_its_answer_is_returned() {
        let policy = policy_fn("longer_title", CheckMode::Lww, |input| {
            let len = |f: &Fields| f.get("title").and_then(|v| v.as_str()).map_or(0, str::len);
            if len(input.local) >= len(input.server) { Resolution::TakeLocal } else { Resolution::TakeServer }
        });
        assert_eq!(policy.name(), "longer_title");
        assert_eq!(policy.check_mode(), CheckMode::Lww);
        let (base, meta) = (Fields::new(), BTreeMap::new());
        let long = json!({"title": "a longer title"}).as_object().unwrap().clone();
        let short = json!({"title": "short"}).as_object().unwrap().clone();
        let hlc = Hlc::zero("d");
        let input = |local, server| MergeInput {
            entity: "notes",
            record_id: "r",
            base: &base,
            local,
            local_hlc: &hlc,
            server,
            server_meta: &meta,
            server_version: 1,
            server_deleted: false,
            conflicting: &[],
        };
        assert_eq!(policy.resolve(&input(&long, &short)), Resolution::TakeLocal);
        assert_eq!(policy.resolve(&input(&short, &long)), Resolution::TakeServer);
        let debug = format!("{:?}", FnPolicy::new("x", CheckMode::Fields, |_: &MergeInput<'_>| Resolution::TakeServer));
        assert!(debug.contains("\"x\"") && debug.contains("Fields"), "{debug}");
    }
}
