//! `FieldMerge`: determinism, order independence, idempotence, and that nothing undisputed is lost.

use converge_core::{Fields, MergePolicy, Resolution};
use converge_policies::{FieldMerge, builtin};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

use crate::model::{BASE_VERSION, Conflict, Scenario, scenario, text_scenario};

/// The final record of a conflict settled by `FieldMerge`, which never needs the user for two
/// concurrent updates.
fn settle(conflict: &Conflict) -> (Resolution, Fields) {
    let resolution = conflict.resolve(&FieldMerge);
    let outcome = conflict.outcome(&resolution);
    (resolution.clone(), outcome.unwrap_or_else(|| panic!("needs review: {resolution:?} for {conflict:?}")))
}

/// "A pushed first, C's device merges" and "C pushed first, A's device merges" end alike.
fn check_order_independence(s: &Scenario) -> Result<(), TestCaseError> {
    let (_, a_first) = settle(&s.a_first());
    let (_, c_first) = settle(&s.c_first());
    prop_assert_eq!(a_first, c_first);
    Ok(())
}

/// Resolving again with the result as the server's state gives the result back, whether the
/// server's clocks stay as they were or show the device's write of the result.
fn check_idempotence(s: &Scenario) -> Result<(), TestCaseError> {
    for conflict in [s.a_first(), s.c_first()] {
        let (_, result) = settle(&conflict);
        let (again, same_clocks) = settle(&conflict.again_same_clocks(&result));
        prop_assert_eq!(&same_clocks, &result, "same clocks: {:?}", again);
        let (again, after_write) = settle(&conflict.again_after_write(&result, BASE_VERSION));
        prop_assert_eq!(&after_write, &result, "after the write: {:?}", again);
    }
    Ok(())
}

proptest! {
    #![proptest_config(Config::with_cases(256))]

    #[test]
    fn the_same_input_gives_the_same_answer(s in scenario()) {
        for conflict in [s.a_first(), s.c_first()] {
            let first = conflict.resolve(&FieldMerge);
            let second = conflict.clone().resolve(builtin("field_merge").unwrap().as_ref());
            prop_assert_eq!(first, second);
        }
    }

    #[test]
    fn both_push_orders_end_with_the_same_record(s in scenario()) {
        check_order_independence(&s)?;
    }

    #[test]
    fn both_push_orders_end_with_the_same_text(s in text_scenario()) {
        check_order_independence(&s)?;
    }

    #[test]
    fn merging_again_changes_nothing(s in scenario()) {
        check_idempotence(&s)?;
    }

    #[test]
    fn merging_text_again_changes_nothing(s in text_scenario()) {
        check_idempotence(&s)?;
    }

    #[test]
    fn undisputed_changes_on_either_side_are_kept(s in scenario()) {
        let conflict = s.a_first();
        let (_, result) = settle(&conflict);
        for key in crate::model::KEYS {
            let expected = match conflict.local.get(key) {
                None => conflict.server.fields.get(key),
                Some(_) if conflict.conflicting.iter().any(|k| k == key) => continue,
                Some(v) => Some(v).filter(|v| !v.is_null()),
            };
            prop_assert_eq!(result.get(key), expected, "key {}", key);
        }
    }

    #[test]
    fn a_conflicting_field_ends_with_one_sides_value_or_their_line_merge(s in scenario()) {
        let conflict = s.a_first();
        let (resolution, result) = settle(&conflict);
        for key in &conflict.conflicting {
            let got = result.get(key);
            let local = conflict.local.get(key).filter(|v| !v.is_null());
            let server = conflict.server.fields.get(key);
            if got == local || got == server {
                continue;
            }
            let notice = match &resolution { Resolution::Merged { notice, .. } => notice.as_str(), _ => "" };
            prop_assert!(matches!(got, Some(Value::String(_))), "{key}: {got:?}");
            prop_assert!(notice.contains(&format!("{key} (lines merged)")), "{notice}");
        }
    }
}

/// The generated scenarios reach every way of settling a field, so the properties above are
/// not vacuous.
#[test]
fn the_scenarios_cover_line_merges_later_edits_and_plain_take_local() {
    let mut runner = TestRunner::deterministic();
    let (mut lines, mut later, mut take_local, mut both_orders_merge_lines) = (0, 0, 0, 0);
    for _ in 0..2000 {
        let s = proptest::strategy::ValueTree::current(&scenario().new_tree(&mut runner).unwrap());
        let notices: Vec<String> = [s.a_first(), s.c_first()]
            .iter()
            .map(|c| match c.resolve(&FieldMerge) {
                Resolution::Merged { notice, .. } => notice,
                Resolution::TakeLocal => {
                    take_local += 1;
                    String::new()
                }
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        lines += notices.iter().filter(|n| n.contains("lines merged")).count();
        later += notices.iter().filter(|n| n.contains("kept the later edit")).count();
        both_orders_merge_lines += usize::from(notices.iter().all(|n| n.contains("lines merged")));
    }
    assert!(lines > 50 && later > 200 && take_local > 100, "{lines} {later} {take_local}");
    assert!(both_orders_merge_lines > 20, "{both_orders_merge_lines}");
    let mut text_merges = 0;
    for _ in 0..1000 {
        let s = proptest::strategy::ValueTree::current(&text_scenario().new_tree(&mut runner).unwrap());
        let merged = |c: Conflict| matches!(c.resolve(&FieldMerge), Resolution::Merged { notice, .. } if notice.contains("lines merged"));
        text_merges += usize::from(merged(s.a_first()) && merged(s.c_first()));
    }
    eprintln!("text scenarios merged by lines: {text_merges} of 1000");
    assert!(text_merges > 150, "{text_merges}");
    assert_eq!(FieldMerge.name(), "field_merge");
}
