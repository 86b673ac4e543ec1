//! Unit tests of the conflict checks.

use serde_json::json;
use uuid::Uuid;

use super::*;

fn m(op: Op, base: Version, patch: serde_json::Value, check: CheckMode, hlc_ms: u64, dev: &str) -> Mutation {
    Mutation {
        op_id: Uuid::now_v7(),
        entity: "notes".into(),
        record_id: "r1".into(),
        op,
        base_version: base,
        patch: patch.as_object().unwrap().clone(),
        hlc: Hlc { millis: hlc_ms, counter: 0, device: dev.into() },
        check,
    }
}

fn apply(m: &Mutation, cur: Option<&StoredRecord>) -> StoredRecord {
    match decide(m, cur, &Rules::default()) {
        Decision::Apply(r) => r,
        other => panic!("expected apply, got {other:?}"),
    }
}

fn answer(m: &Mutation, cur: Option<&StoredRecord>) -> OpOutcome {
    match decide(m, cur, &Rules::default()) {
        Decision::Answer(o) => o,
        other => panic!("expected an answer, got {other:?}"),
    }
}

fn base() -> StoredRecord {
    let r1 = apply(&m(Op::Create, 0, json!({"title": "a", "body": "b"}), CheckMode::Fields, 1, "d1"), None);
    apply(&m(Op::Update, 1, json!({"title": "t2"}), CheckMode::Fields, 2, "d2"), Some(&r1))
}

#[test]
fn create_then_fields_merge_and_conflict() {
    let r = base();
    assert_eq!(r.version, 2);
    assert_eq!(r.meta["title"].v, 2);
    assert_eq!(r.meta["body"].v, 1);
    // Other field changed since base 1: merges.
    let merged = apply(&m(Op::Update, 1, json!({"body": "b2"}), CheckMode::Fields, 3, "d1"), Some(&r));
    assert_eq!(merged.version, 3);
    assert_eq!(Value::Object(merged.fields), json!({"title": "t2", "body": "b2"}));
    // Same field changed since base 1 to another value: conflict.
    let OpOutcome::Conflict(c) =
        answer(&m(Op::Update, 1, json!({"title": "mine"}), CheckMode::Fields, 3, "d1"), Some(&r))
    else {
        panic!()
    };
    assert_eq!(c.fields, vec!["title".to_string()]);
    assert_eq!(c.server.version, 2);
    // Same field changed to the same value: no conflict; the write is stamped as a new version
    // so a concurrent write based on version 2 sees it.
    let same = apply(&m(Op::Update, 1, json!({"title": "t2"}), CheckMode::Fields, 3, "d1"), Some(&r));
    assert_eq!((same.version, same.meta["title"].v), (3, 3));
    assert_eq!(same.fields, r.fields);
}

use serde_json::Value;

#[test]
fn record_mode_conflicts_on_any_change() {
    let r = base();
    let OpOutcome::Conflict(c) = answer(&m(Op::Update, 1, json!({"body": "x"}), CheckMode::Record, 3, "d1"), Some(&r))
    else {
        panic!()
    };
    assert_eq!(c.fields, vec!["title".to_string()]);
    assert_eq!(apply(&m(Op::Update, 2, json!({"body": "x"}), CheckMode::Record, 3, "d1"), Some(&r)).version, 3);
}

#[test]
fn lww_keeps_highest_hlc_whatever_the_order() {
    let r = base();
    let early = m(Op::Update, 1, json!({"title": "early"}), CheckMode::Lww, 3, "d9");
    let late = m(Op::Update, 1, json!({"title": "late"}), CheckMode::Lww, 5, "d0");
    let stale = m(Op::Update, 1, json!({"title": "stale"}), CheckMode::Lww, 1, "d9");
    // A losing write is accepted, changes no value, and still moves the version so its sender
    // hears of the winning value through the feed.
    let after_stale = apply(&stale, Some(&r));
    assert_eq!((after_stale.version, &after_stale.fields), (3, &r.fields));
    let ab = apply(&early, Some(&apply(&late, Some(&r))));
    let ba = apply(&late, Some(&apply(&early, Some(&r))));
    assert_eq!(ab.fields, ba.fields);
    assert_eq!(ab.meta["title"].hlc, ba.meta["title"].hlc);
    assert_eq!(ab.fields["title"], json!("late"));
}

#[test]
fn missing_deleted_and_bad_base() {
    let upd = m(Op::Update, 1, json!({"a": 1}), CheckMode::Fields, 1, "d");
    let OpOutcome::Rejected(r) = answer(&upd, None) else { panic!() };
    assert_eq!((r.code, r.retryable), (Code::NotFound, false));
    let cur = base();
    let OpOutcome::Rejected(r) = answer(&m(Op::Update, 9, json!({"a": 1}), CheckMode::Fields, 1, "d"), Some(&cur))
    else {
        panic!()
    };
    assert_eq!(r.code, Code::InvalidRequest);
    let gone = apply(&m(Op::Delete, 2, json!({}), CheckMode::Fields, 9, "d"), Some(&cur));
    assert!(gone.deleted && gone.fields.is_empty() && gone.version == 3);
    assert!(matches!(answer(&upd, Some(&gone)), OpOutcome::Conflict(c) if c.server.deleted));
    assert!(matches!(
        answer(&m(Op::Create, 0, json!({}), CheckMode::Fields, 1, "d"), Some(&cur)),
        OpOutcome::Conflict(_)
    ));
    let stale_delete = m(Op::Delete, 1, json!({}), CheckMode::Fields, 9, "d");
    assert!(matches!(answer(&stale_delete, Some(&cur)), OpOutcome::Conflict(_)));
}

#[test]
fn a_pinned_entity_refuses_weaker_check_modes() {
    let mut rules = Rules::default();
    rules.pins.insert("notes".into(), CheckMode::Record);
    let weak = m(Op::Create, 0, json!({"a": 1}), CheckMode::Fields, 1, "d");
    let Decision::Answer(OpOutcome::Rejected(r)) = decide(&weak, None, &rules) else { panic!() };
    assert_eq!((r.code, r.retryable), (Code::CheckModeTooWeak, false));
    let strict = m(Op::Create, 0, json!({"a": 1}), CheckMode::Record, 1, "d");
    assert!(matches!(decide(&strict, None, &rules), Decision::Apply(_)));
    rules.pins.insert("notes".into(), CheckMode::Fields);
    let lww = m(Op::Create, 0, json!({"a": 1}), CheckMode::Lww, 1, "d");
    assert!(matches!(decide(&lww, None, &rules), Decision::Answer(OpOutcome::Rejected(_))));
}

#[test]
fn record_size_limit() {
    let big = "x".repeat(300 * 1024);
    let OpOutcome::Rejected(r) = answer(&m(Op::Create, 0, json!({"b": big}), CheckMode::Fields, 1, "d"), None) else {
        panic!()
    };
    assert_eq!(r.code, Code::RecordTooLarge);
}
