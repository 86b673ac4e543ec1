//! The OpenAPI document's patterns accept exactly what the validators accept.

use proptest::prelude::*;
use regex::Regex;

use crate::hlc::{DEVICE_ID_PATTERN, HLC_PATTERN, Hlc, validate_device_id};
use crate::model::{ENTITY_PATTERN, RECORD_ID_PATTERN, validate_entity, validate_record_id};
use crate::wire::{CURSOR_PATTERN, IDEMPOTENCY_KEY_PATTERN, parse_cursor, validate_idempotency_key};

/// Strings near the edges: the characters each rule names and a few it does not, of lengths
/// around each limit.
fn near_edges() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        Just('a'),
        Just('Z'),
        Just('0'),
        Just('9'),
        Just('-'),
        Just('_'),
        Just('.'),
        Just(':'),
        Just(' '),
        Just('~'),
        Just('é'),
        Just('\u{7f}'),
        Just('/'),
    ];
    prop_oneof![
        proptest::collection::vec(ch.clone(), 0..8),
        proptest::collection::vec(ch.clone(), 60..70),
        proptest::collection::vec(ch.clone(), 124..132),
        proptest::collection::vec(ch, 250..260),
    ]
    .prop_map(|v| v.into_iter().collect())
}

/// HLC-shaped strings: 12 to 14 digits, a dash, 3 to 5 hex digits of either case, a dash, a device.
fn hlc_like() -> impl Strategy<Value = String> {
    ("[0-9]{12,14}", "[-x]", "[0-9a-fA-F]{3,5}", "[-x]", "[a-z0-9._ -]{0,66}")
        .prop_map(|(ms, d1, counter, d2, device)| format!("{ms}{d1}{counter}{d2}{device}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn entity_and_ids_match_their_patterns(s in near_edges()) {
        let (entity, record, device) =
            (Regex::new(ENTITY_PATTERN).unwrap(), Regex::new(RECORD_ID_PATTERN).unwrap(), Regex::new(DEVICE_ID_PATTERN).unwrap());
        prop_assert_eq!(validate_entity(&s).is_ok(), entity.is_match(&s), "entity {:?}", s);
        prop_assert_eq!(validate_record_id(&s).is_ok(), record.is_match(&s), "record id {:?}", s);
        prop_assert_eq!(validate_device_id(&s).is_ok(), device.is_match(&s), "device id {:?}", s);
    }

    #[test]
    fn idempotency_keys_match_their_pattern(s in near_edges()) {
        // A header's value reaches the server trimmed, so the pattern is narrower by exactly that.
        let key = Regex::new(IDEMPOTENCY_KEY_PATTERN).unwrap();
        let untrimmed = s.trim_matches(' ') == s;
        prop_assert_eq!(validate_idempotency_key(&s).is_ok() && untrimmed, key.is_match(&s), "key {:?}", s);
    }

    #[test]
    fn cursors_match_their_pattern(s in "c?[0-9.x]{0,21}") {
        let cursor = Regex::new(CURSOR_PATTERN).unwrap();
        prop_assert_eq!(parse_cursor(&s).is_some(), cursor.is_match(&s), "cursor {:?}", s);
    }

    #[test]
    fn hlcs_match_their_pattern(s in hlc_like()) {
        let hlc = Regex::new(HLC_PATTERN).unwrap();
        prop_assert_eq!(s.parse::<Hlc>().is_ok(), hlc.is_match(&s), "hlc {:?}", s);
    }
}
