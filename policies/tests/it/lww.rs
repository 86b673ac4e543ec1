//! `LastWriterWins`: determinism, order independence, idempotence, and agreement with "the
//! latest write of each field".

use converge_core::{Fields, Hlc};
use converge_policies::{LastWriterWins, builtin};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::Value;

use crate::model::{BASE_VERSION, Conflict, KEYS, Scenario, scenario};

fn settle(conflict: &Conflict) -> Fields {
    let resolution = conflict.resolve(&LastWriterWins);
    conflict.outcome(&resolution).unwrap_or_else(|| panic!("needs review: {resolution:?}"))
}

/// Each field's latest write among the base and both edits (edits are later than the base).
fn latest_writes(s: &Scenario) -> Fields {
    let mut fields = s.base.fields.clone();
    for key in KEYS {
        let writes = [(&s.a, &s.hlc_a), (&s.c, &s.hlc_c)];
        let latest: Option<(&Value, &Hlc)> =
            writes.iter().filter_map(|(patch, hlc)| patch.get(key).map(|v| (v, *hlc))).max_by(|x, y| x.1.cmp(y.1));
        match latest {
            Some((Value::Null, _)) => {
                fields.remove(key);
            }
            Some((v, _)) => {
                fields.insert(key.to_owned(), v.clone());
            }
            None => {}
        }
    }
    fields
}

proptest! {
    #![proptest_config(Config::with_cases(256))]

    #[test]
    fn the_same_input_gives_the_same_answer(s in scenario()) {
        let s = s.effective();
        for conflict in [s.a_first(), s.c_first()] {
            let first = conflict.resolve(&LastWriterWins);
            prop_assert_eq!(first, conflict.clone().resolve(builtin("lww").unwrap().as_ref()));
        }
    }

    #[test]
    fn both_push_orders_end_with_each_fields_latest_write(s in scenario()) {
        let s = s.effective();
        let a_first = settle(&s.a_first());
        prop_assert_eq!(&a_first, &settle(&s.c_first()));
        prop_assert_eq!(&a_first, &latest_writes(&s));
    }

    #[test]
    fn merging_again_changes_nothing(s in scenario()) {
        let s = s.effective();
        for conflict in [s.a_first(), s.c_first()] {
            let result = settle(&conflict);
            prop_assert_eq!(&settle(&conflict.again_same_clocks(&result)), &result);
            prop_assert_eq!(&settle(&conflict.again_after_write(&result, BASE_VERSION)), &result);
        }
    }
}
