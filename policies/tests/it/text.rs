//! `merge_lines`: symmetric, and merging an edit into a text that holds it is a no-op.

use converge_policies::merge_lines;
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::Value;

use crate::model::{scenario, text_scenario};

proptest! {
    #![proptest_config(Config::with_cases(256))]

    #[test]
    fn merges_are_symmetric_and_stable(s in prop_oneof![scenario(), text_scenario()]) {
        for (key, base) in &s.base.fields {
            let (Value::String(b), Some(Value::String(l)), Some(Value::String(r))) = (base, s.a.get(key), s.c.get(key))
            else { continue };
            let merged = merge_lines(b, l, r);
            prop_assert_eq!(&merged, &merge_lines(b, r, l));
            if let Some(m) = merged {
                prop_assert_eq!(merge_lines(b, l, &m), Some(m.clone()));
                prop_assert_eq!(merge_lines(b, r, &m), Some(m.clone()));
                prop_assert_eq!(merge_lines(b, &m, &m), Some(m.clone()));
            }
        }
    }
}
