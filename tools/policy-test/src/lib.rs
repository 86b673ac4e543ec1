//! A test harness for merge policies: runs any [`MergePolicy`] — a built-in, a Rust closure, a
//! loaded WASM plugin — against a cases file, from `cargo test` ([`assert_cases`]) or from the
//! shell (`converge policy test`). No wasm runtime here: the caller hands in the policy.
//!
//! For each case the harness
//! 1. asks the policy and compares its answer, or the record the engine would end with
//!    ([`Conflict::final_record`]), with the case's `expect`;
//! 2. asks again with the identical input and requires the identical answer (determinism);
//! 3. if the file says `"order_independent": true`, derives the same two edits arriving the other
//!    way round ([`Conflict::swapped`]), asks the policy about that, and requires the same end:
//!    the same settled record, or both left for the user.
//!
//! ```
//! use converge_policy_test::{CaseFile, run};
//!
//! let file = CaseFile::from_json(r#"{"policy": "lww", "cases": [{"name": "no server clock: the local value wins",
//!     "base": {"done": false}, "local": {"done": true}, "server": {"done": false},
//!     "expect": "take_local"}]}"#)?;
//! let report = run(&converge_policies::LastWriterWins, &file);
//! assert!(report.passed(), "{report}");
//! # Ok::<(), converge_policy_test::Error>(())
//! ```
//!
//! The file format (docs/plugins.md has the full reference):
//! `{"policy": NAME, "order_independent": BOOL, "cases": [CASE, ...]}` where a case has `name`,
//! `base`, `local` (the changed fields, `null` removes; `{}` is a local delete), `server`,
//! `expect`, and optionally `entity` (`test`), `record_id` (`r1`), `local_hlc`
//! ([`DEFAULT_LOCAL_HLC`]), `server_meta` (`{}`), `server_version` (the latest version in
//! `server_meta`, at least 2), `server_deleted` (`false`) and `conflicting`
//! ([`Conflict::default_conflicting`]).

mod cases;
mod conflict;
mod error;
mod report;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

pub use cases::{Case, CaseFile, Expect};
pub use conflict::{
    Conflict, DEFAULT_ENTITY, DEFAULT_LOCAL_HLC, DEFAULT_RECORD_ID, DEFAULT_SERVER_HLC, DELETED_ON_SERVER, FinalRecord,
};
pub use converge_core::{MergePolicy, Resolution};
pub use error::{Error, Result};
pub use report::{Answer, CaseResult, Failure, FieldDiff, Report, diff_fields};

/// The hint for an order failure of a case whose `server_meta` does not date the server's change.
const NO_SERVER_CLOCK: &str = "server_meta gives no clock for the fields the server changed, so neither order \
                               knows when the other side wrote; give them if the policy compares clocks";

/// Runs `policy` against every case of `file`.
pub fn run(policy: &dyn MergePolicy, file: &CaseFile) -> Report {
    Report {
        policy: policy.name().to_owned(),
        cases_for: file.policy.clone(),
        order_independent: file.order_independent,
        results: file.cases.iter().map(|case| run_case(policy, case, file.order_independent)).collect(),
    }
}

/// Loads the cases file at `path` (relative paths start at the package root under `cargo test`),
/// runs `policy` against it, and panics with the rendered report unless every case passes.
///
/// ```no_run
/// #[test]
/// fn my_policy_passes_its_cases() {
///     converge_policy_test::assert_cases(&converge_policies::FieldMerge, "cases.json");
/// }
/// ```
#[track_caller]
pub fn assert_cases(policy: &dyn MergePolicy, path: impl AsRef<Path>) {
    let file = CaseFile::from_path(path.as_ref()).unwrap_or_else(|e| panic!("{e}"));
    let report = run(policy, &file);
    if !report.passed() {
        panic!("{} of {} case(s) in {} failed:\n{report}", report.failed(), file.cases.len(), path.as_ref().display());
    }
}

/// Asks the policy, turning a panic into an answer.
fn ask(policy: &dyn MergePolicy, conflict: &Conflict) -> std::result::Result<Resolution, Answer> {
    catch_unwind(AssertUnwindSafe(|| policy.resolve(&conflict.input()))).map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        Answer::Panicked { message }
    })
}

fn run_case(policy: &dyn MergePolicy, case: &Case, order_independent: bool) -> CaseResult {
    let first = ask(policy, &case.conflict);
    let (answer, record) = match &first {
        Ok(resolution) => (Answer::from(resolution), Some(case.conflict.final_record(resolution))),
        Err(panicked) => (panicked.clone(), None),
    };
    let mut failures = Vec::new();
    if let Some(failure) = check_expect(case, &answer, record.as_ref()) {
        failures.push(failure);
    }
    let second = match ask(policy, &case.conflict) {
        Ok(resolution) => Answer::from(&resolution),
        Err(panicked) => panicked,
    };
    if second != answer {
        failures.push(Failure::Nondeterministic { first: answer.clone(), second });
    }
    if let (true, Some(this_order)) = (order_independent, &record) {
        let (swapped_answer, swapped) = match case.conflict.swapped() {
            None => (None, Some(case.conflict.local_taken())),
            Some(other) => match ask(policy, &other) {
                Ok(resolution) => (Some(Answer::from(&resolution)), Some(other.final_record(&resolution))),
                Err(panicked) => (Some(panicked), None),
            },
        };
        let ends_alike = swapped.as_ref().is_some_and(|s| this_order.same_end(s));
        if !ends_alike {
            let swapped = swapped.unwrap_or(FinalRecord::Open { record: None, reason: "the policy panicked".into() });
            let clockless = swapped_answer.is_some() && case.conflict.server_change_hlc().is_none();
            failures.push(Failure::OrderDependent {
                diff: diff_fields(this_order.record(), swapped.record()),
                this_order: this_order.clone(),
                swapped,
                swapped_answer,
                note: clockless.then(|| NO_SERVER_CLOCK.to_owned()),
            });
        }
    }
    CaseResult { name: case.name.clone(), answer, record, failures }
}

/// Compares the answer (and the record it ends with) with the case's expectation.
fn check_expect(case: &Case, answer: &Answer, record: Option<&FinalRecord>) -> Option<Failure> {
    let got_record = record.and_then(FinalRecord::record);
    let got = match record {
        Some(r) => format!("{answer}, ending {r}"),
        None => answer.to_string(),
    };
    // The record the expected answer would have ended with, to diff against the one got.
    let would_end = |expected: Resolution| case.conflict.final_record(&expected);
    let (ok, expected_record) = match (&case.expect, answer) {
        (Expect::TakeLocal, a) => (*a == Answer::TakeLocal, would_end(Resolution::TakeLocal)),
        (Expect::TakeServer, a) => (*a == Answer::TakeServer, would_end(Resolution::TakeServer)),
        (Expect::Merged(want), Answer::Merged { fields, .. }) => {
            let ok = want == fields;
            return (!ok).then(|| Failure::Unexpected {
                expected: case.expect.to_string(),
                got,
                diff: diff_fields(Some(want), Some(fields)),
            });
        }
        (Expect::Merged(want), _) => {
            (false, would_end(Resolution::Merged { fields: want.clone(), notice: String::new() }))
        }
        (Expect::NeedsReview(text), a) => {
            let ok = match (a, text) {
                (Answer::NeedsReview { .. }, None) => true,
                (Answer::NeedsReview { reason }, Some(text)) => reason.contains(text.as_str()),
                _ => false,
            };
            (ok, would_end(Resolution::NeedsReview { reason: String::new() }))
        }
        (Expect::Record(want), _) => {
            let ok = record.is_some_and(|r| !r.is_open() && r.record() == want.as_ref());
            (ok, FinalRecord::Settled { record: want.clone() })
        }
    };
    (!ok).then(|| Failure::Unexpected {
        expected: case.expect.to_string(),
        got,
        diff: diff_fields(expected_record.record(), got_record),
    })
}
