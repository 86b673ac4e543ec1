//! The harness against the built-in policies and against policies made to fail: wrong
//! expectations, nondeterminism, order dependence, panics.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};

use converge_core::{CheckMode, MergeInput, MergePolicy, Resolution};
use converge_policies::{FieldMerge, LastWriterWins, ServerAuthoritative, policy_fn};
use converge_policy_test::{Answer, CaseFile, Failure, FieldDiff, FinalRecord, assert_cases, run};
use serde_json::{Value, json};

fn file(v: Value) -> CaseFile {
    CaseFile::from_json(&v.to_string()).unwrap()
}

fn panic_text(f: impl FnOnce()) -> String {
    let err = catch_unwind(AssertUnwindSafe(f)).expect_err("it should panic");
    err.downcast_ref::<String>().cloned().or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string())).unwrap()
}

/// Both sides changed `n` from 1, the server's write being the later one.
fn clash(order_independent: bool, expect: Value) -> CaseFile {
    file(json!({"policy": "field_merge", "order_independent": order_independent, "cases": [{
        "name": "clash", "base": {"n": 1, "keep": true}, "local": {"n": 2}, "server": {"n": 3, "keep": true},
        "server_meta": {"n": {"version": 2, "hlc": "1700000000009-0000-dev-b"}}, "expect": expect
    }]}))
}

#[test]
fn the_built_in_policies_pass_their_cases_in_both_orders() {
    assert_cases(&FieldMerge, "tests/cases/field_merge.json");
    assert_cases(&LastWriterWins, "tests/cases/lww.json");
    assert_cases(&ServerAuthoritative, "tests/cases/server_authoritative.json");
    let lww = CaseFile::from_path("tests/cases/lww.json").unwrap();
    assert!(lww.order_independent && lww.cases.len() == 3);
}

#[test]
fn a_wrong_expectation_fails_with_a_diff_of_the_fields() {
    let report = run(&FieldMerge, &CaseFile::from_path("tests/cases/field_merge_wrong.json").unwrap());
    assert!(!report.passed());
    assert_eq!(report.failed(), 1);
    assert!(report.results[0].passed(), "{report}");
    let wrong = &report.results[1];
    assert_eq!(wrong.answer.kind(), "merged");
    let [Failure::Unexpected { expected, got, diff }] = wrong.failures.as_slice() else {
        panic!("one unexpected answer: {:?}", wrong.failures)
    };
    assert_eq!(expected, "merged {\"n\":2}");
    assert!(got.starts_with("merged {\"n\":3}") && got.contains("kept the later edit"), "{got}");
    assert_eq!(diff, &[FieldDiff { field: "n".into(), expected: Some(json!(2)), got: Some(json!(3)) }]);
    let table = report.to_string();
    assert!(table.contains("  PASS    right"), "{table}");
    assert!(table.contains("  FAIL    wrong: the server's clock is later  merged"), "{table}");
    assert!(table.contains("          n: expected 2, got 3"), "{table}");
    assert!(table.ends_with("1 passed, 1 failed"), "{table}");
}

#[test]
fn a_wrong_kind_of_answer_is_diffed_on_the_records_each_would_leave() {
    let report = run(&FieldMerge, &clash(false, json!("take_local")));
    let [Failure::Unexpected { expected, diff, .. }] = report.results[0].failures.as_slice() else {
        panic!("{report}")
    };
    assert_eq!(expected, "take_local");
    assert_eq!(diff, &[FieldDiff { field: "n".into(), expected: Some(json!(2)), got: Some(json!(3)) }]);

    let report = run(&FieldMerge, &clash(false, json!({"record": {"n": 3, "keep": true}})));
    assert!(report.passed(), "the record got is the expected one: {report}");
    let report = run(&FieldMerge, &clash(false, json!({"record": null})));
    let [Failure::Unexpected { diff, .. }] = report.results[0].failures.as_slice() else { panic!("{report}") };
    assert_eq!(diff.len(), 2, "a deleted record has neither field: {diff:?}");
    let report = run(&FieldMerge, &clash(false, json!({"needs_review": null})));
    assert!(report.to_string().contains("expected needs_review"), "{report}");
}

#[test]
fn a_record_expectation_fails_while_the_conflict_waits_for_review() {
    let cases = file(json!({"policy": "server_authoritative", "cases": [{
        "name": "open", "base": {"t": 1}, "local": {"t": 2}, "server": {"t": 3}, "expect": {"record": {"t": 3}}
    }]}));
    let report = run(&ServerAuthoritative, &cases);
    let [Failure::Unexpected { got, diff, .. }] = report.results[0].failures.as_slice() else { panic!("{report}") };
    assert!(got.contains("open for review"), "{got}");
    assert!(diff.is_empty(), "the view shows the expected fields, but nothing is settled");
    assert!(matches!(report.results[0].record, Some(FinalRecord::Open { .. })));
}

#[test]
fn a_review_reason_must_contain_the_expected_text() {
    let cases = |text: &str| {
        file(json!({"policy": "server_authoritative", "cases": [{
            "name": "r", "base": {"t": 1}, "local": {"t": 2}, "server": {"t": 3}, "expect": {"needs_review": text}
        }]}))
    };
    assert!(run(&ServerAuthoritative, &cases("(t)")).passed());
    let report = run(&ServerAuthoritative, &cases("price"));
    assert!(!report.passed());
    assert!(report.to_string().contains("reason containing \"price\""), "{report}");
}

/// Alternates between keeping the local and the server's values: the same input, two answers.
struct Flaky(AtomicUsize);

impl MergePolicy for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }

    fn resolve(&self, _: &MergeInput<'_>) -> Resolution {
        if self.0.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
            Resolution::TakeLocal
        } else {
            Resolution::TakeServer
        }
    }
}

#[test]
fn a_nondeterministic_policy_is_caught() {
    let report = run(&Flaky(AtomicUsize::new(0)), &clash(false, json!("take_local")));
    let result = &report.results[0];
    assert_eq!(result.answer, Answer::TakeLocal, "the first answer matches the expectation");
    assert_eq!(
        result.failures,
        [Failure::Nondeterministic { first: Answer::TakeLocal, second: Answer::TakeServer }],
        "{report}"
    );
    let table = report.to_string();
    assert!(table.contains("not deterministic: the same input gave take_local"), "{table}");
    assert!(table.contains("and then       take_server"), "{table}");
}

#[test]
fn an_order_dependent_policy_is_caught_when_the_file_asks() {
    let local_wins = policy_fn("local_wins", CheckMode::Fields, |_| Resolution::TakeLocal);
    assert!(run(local_wins.as_ref(), &clash(false, json!("take_local"))).passed(), "not asked: not checked");
    let report = run(local_wins.as_ref(), &clash(true, json!("take_local")));
    let [Failure::OrderDependent { this_order, swapped, swapped_answer, diff, note }] =
        report.results[0].failures.as_slice()
    else {
        panic!("{report}")
    };
    assert_eq!(this_order.record(), Some(json!({"n": 2, "keep": true}).as_object().unwrap()));
    assert_eq!(swapped.record(), Some(json!({"n": 3, "keep": true}).as_object().unwrap()));
    assert_eq!(swapped_answer, &Some(Answer::TakeLocal));
    assert_eq!(diff, &[FieldDiff { field: "n".into(), expected: Some(json!(2)), got: Some(json!(3)) }]);
    assert_eq!(note, &None, "the case dates the server's change");
    let table = report.to_string();
    assert!(table.contains("depends on the arrival order"), "{table}");
    assert!(table.contains("n: this order 2, swapped 3"), "{table}");
    assert!(run(&FieldMerge, &clash(true, json!({"merged": {"n": 3, "keep": true}}))).passed(), "field_merge is not");
}

#[test]
fn settling_in_one_order_and_waiting_in_the_other_is_order_dependent() {
    // Leaves dev-a's edits for review and lets the server win against anyone else's: in the
    // case's order the local edit is dev-a's (open), swapped it is dev-b's (settled).
    let picky = policy_fn("picky", CheckMode::Fields, |input| {
        if input.local_hlc.device == "dev-a" {
            Resolution::NeedsReview { reason: "mine".into() }
        } else {
            Resolution::TakeServer
        }
    });
    let report = run(picky.as_ref(), &clash(true, json!({"needs_review": "mine"})));
    let [Failure::OrderDependent { this_order, swapped, .. }] = report.results[0].failures.as_slice() else {
        panic!("{report}")
    };
    assert!(this_order.is_open() && !swapped.is_open());
}

#[test]
fn a_panicking_policy_fails_its_case_and_the_run_goes_on() {
    let moody = policy_fn("moody", CheckMode::Fields, |input| {
        assert!(input.local.get("n") != Some(&json!(2)), "cannot stand a two");
        Resolution::TakeServer
    });
    let cases = file(json!({"policy": "moody", "cases": [
        {"name": "two", "base": {}, "local": {"n": 2}, "server": {}, "expect": "take_server"},
        {"name": "three", "base": {}, "local": {"n": 3}, "server": {}, "expect": "take_server"}
    ]}));
    let report = run(moody.as_ref(), &cases);
    let two = &report.results[0];
    assert_eq!(two.answer, Answer::Panicked { message: "cannot stand a two".into() });
    assert!(two.record.is_none() && !two.passed());
    assert!(report.results[1].passed(), "{report}");
}

#[test]
fn assert_cases_panics_with_the_rendered_report() {
    let text = panic_text(|| assert_cases(&FieldMerge, "tests/cases/field_merge_wrong.json"));
    assert!(text.starts_with("1 of 2 case(s) in tests/cases/field_merge_wrong.json failed:"), "{text}");
    assert!(
        text.contains("FAIL    wrong: the server's clock is later") && text.contains("n: expected 2, got 3"),
        "{text}"
    );
    let text = panic_text(|| assert_cases(&FieldMerge, "tests/cases/missing.json"));
    assert!(text.starts_with("cannot read tests/cases/missing.json"), "{text}");
}

#[test]
fn a_file_for_another_policy_is_noted_in_the_report() {
    let report = run(&LastWriterWins, &CaseFile::from_path("tests/cases/server_authoritative.json").unwrap());
    let table = report.to_string();
    assert!(table.contains("note: the cases were written for \"server_authoritative\", not \"lww\""), "{table}");
    assert!(!report.passed(), "lww settles what server_authoritative leaves for review");
}

#[test]
fn the_report_serializes_for_machines() {
    let report = run(&FieldMerge, &CaseFile::from_path("tests/cases/field_merge_wrong.json").unwrap());
    let v = serde_json::to_value(&report).unwrap();
    assert_eq!((v["passed"].clone(), v["total"].clone(), v["failed"].clone()), (json!(false), json!(2), json!(1)));
    assert_eq!(v["results"][0]["answer"], json!({"answer": "take_local"}));
    assert_eq!(v["results"][0]["record"], json!({"state": "settled", "record": {"n": 2, "m": 5}}));
    let failure = &v["results"][1]["failures"][0];
    assert_eq!(failure["failure"], "unexpected");
    assert_eq!(failure["diff"], json!([{"field": "n", "expected": 2, "got": 3}]));
    assert_eq!(v["results"][1]["answer"]["answer"], "merged");
}

#[test]
fn an_order_failure_without_server_clocks_says_so() {
    let undated = file(json!({"policy": "lww", "order_independent": true, "cases": [{
        "name": "undated", "base": {"n": 1}, "local": {"n": 2}, "server": {"n": 3}, "expect": "take_local"
    }]}));
    let report = run(&LastWriterWins, &undated);
    let [Failure::OrderDependent { note: Some(note), .. }] = report.results[0].failures.as_slice() else {
        panic!("{report}")
    };
    assert!(note.starts_with("server_meta gives no clock"), "{note}");
    assert!(report.to_string().contains("note: server_meta gives no clock"), "{report}");
    let dated = file(json!({"policy": "lww", "order_independent": true, "cases": [{
        "name": "dated", "base": {"n": 1}, "local": {"n": 2}, "server": {"n": 3},
        "server_meta": {"n": {"version": 2, "hlc": "1700000000009-0000-dev-b"}}, "expect": "take_server"
    }]}));
    assert!(run(&LastWriterWins, &dated).passed(), "with the clock given, lww is order independent");
}
