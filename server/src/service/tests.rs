//! Unit tests of the service's pieces: cursors, body hashes, replays, the in-flight guard, and the
//! mapping of store failures.

use converge_core::hlc::Hlc;
use converge_core::model::{CheckMode, Op};
use converge_core::wire::Mutation;
use serde_json::json;
use uuid::Uuid;

use super::*;

#[test]
fn cursors_round_trip_and_decode_strictly() {
    let largest = 999_999_999_999_999_999;
    for seq in [0, 1, 42, largest] {
        for horizon in [0, 1, 43, largest] {
            let cursor = Cursor { seq, horizon };
            assert_eq!(decode_cursor(&cursor.encode()).unwrap(), cursor);
        }
    }
    assert_eq!(Cursor { seq: 7, horizon: 0 }.encode(), "c7");
    assert_eq!(Cursor { seq: 7, horizon: 9 }.encode(), "c7.9");
    let bad = [
        "",
        "c",
        "0",
        "5",
        "c-1",
        "c+1",
        "c01",
        "c 1",
        "c1 ",
        "C1",
        "c1x",
        "c9223372036854775808",
        "c1000000000000000000",
        "cx",
        "c1.",
        "c.1",
        "c1.0",
        "c1.01",
        "c1.2.3",
        "c1.-2",
        "c1.9223372036854775808",
        "c1.1000000000000000000",
        "c1,2",
    ];
    for bad in bad {
        let err = decode_cursor(bad).unwrap_err();
        assert_eq!(err.code, Code::InvalidRequest, "{bad:?}");
    }
}

#[test]
fn a_cursor_expires_when_it_could_miss_a_removed_tombstone() {
    let c = |seq, horizon| Cursor { seq, horizon };
    // At or past the horizon: it passed every removed tombstone.
    assert!(!c(5, 0).expired(5));
    assert!(!c(9, 2).expired(5));
    // Before the horizon, given out before the horizon last moved: expired.
    assert!(c(4, 0).expired(5));
    assert!(c(4, 3).expired(5));
    // Before the horizon, given out while the horizon was the same (a read from the start
    // paging through a compacted feed): it goes on.
    assert!(!c(1, 5).expired(5));
    // A horizon the tenant never reached: another copy of the data.
    assert!(c(9, 6).expired(5));
    assert!(c(1, 6).expired(5));
}

fn batch(patch: serde_json::Value) -> PushBatch {
    PushBatch {
        device_id: "dev-1".into(),
        mutations: vec![Mutation {
            op_id: Uuid::from_u128(7),
            entity: "notes".into(),
            record_id: "r1".into(),
            op: Op::Create,
            base_version: 0,
            patch: patch.as_object().unwrap().clone(),
            hlc: Hlc { millis: 1, counter: 0, device: "dev-1".into() },
            check: CheckMode::Fields,
        }],
    }
}

#[test]
fn the_body_hash_is_canonical_and_tells_bodies_apart() {
    let a = body_hash(&batch(json!({"a": 1, "b": 2}))).unwrap();
    // The same object written in another key order hashes the same.
    let reordered: serde_json::Value = serde_json::from_str(r#"{"b": 2, "a": 1}"#).unwrap();
    assert_eq!(body_hash(&batch(reordered)).unwrap(), a);
    assert_eq!(a.len(), 64);
    assert!(a.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_ne!(body_hash(&batch(json!({"a": 1, "b": 3}))).unwrap(), a);
}

#[test]
fn replay_needs_the_same_body() {
    let stored = StoredPush { body_hash: "abc".into(), response: PushResponse::default() };
    let again = replay(stored.clone(), "abc").unwrap();
    assert!(again.replayed);
    let err = replay(stored, "abd").unwrap_err();
    assert_eq!(err.code(), Some(Code::IdempotencyKeyReused));
}

#[cfg(feature = "sqlite")]
#[test]
fn the_in_flight_guard_holds_the_key_until_dropped() {
    let store: Arc<dyn ServerStore> = Arc::new(crate::SqliteServerStore::open_in_memory().unwrap());
    let service = SyncService::new(store, Limits::default());
    let scope = Scope::new("t", "u");
    let other_user = Scope::new("t", "v");
    let guard = InFlight::begin(&service.inner, &scope, "k").unwrap();
    assert!(InFlight::begin(&service.inner, &scope, "k").is_none());
    // Keys are scoped by tenant and user.
    let other = InFlight::begin(&service.inner, &other_user, "k").unwrap();
    drop(guard);
    assert!(InFlight::begin(&service.inner, &scope, "k").is_some());
    drop(other);
    assert!(service.inner.in_flight.lock().unwrap().is_empty());
}

#[test]
fn store_failures_map_to_codes_without_details() {
    let map = store_error("test");
    let busy = map(converge_core::Error::Store { detail: "database is locked".into(), retryable: true, source: None });
    let converge_core::Error::Api(busy) = busy else { panic!("{busy:?}") };
    assert_eq!((busy.code, busy.retry_after), (Code::Unavailable, Some(BUSY_RETRY_AFTER)));

    let broken = map(converge_core::Error::store("disk I/O error in records"));
    let converge_core::Error::Api(broken) = broken else { panic!("{broken:?}") };
    assert_eq!(broken.code, Code::Internal);
    assert!(!broken.detail.contains("records"), "{}", broken.detail);

    let client = map(ApiError::invalid("the cursor is ahead").into());
    assert_eq!(client.code(), Some(Code::InvalidRequest));
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_refused_push_is_not_stored() {
    let store = crate::SqliteServerStore::open_in_memory().unwrap();
    let service = SyncService::new(Arc::new(store.clone()), Limits { max_batch: 1, ..Limits::default() });
    let api = service.for_scope(Scope::new("t", "u"));
    let mut two = batch(json!({"a": 1}));
    let mut second = two.mutations[0].clone();
    second.op_id = Uuid::from_u128(8);
    second.record_id = "r2".into();
    two.mutations.push(second);
    let err = api.push(PushRequest { idempotency_key: "k".into(), batch: two }).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::BatchTooLarge));
    let scope = api.scope().clone();
    assert!(store.stored_push(&scope, "k").await.unwrap().is_none());
    // A corrected retry with the same key runs.
    let ok = api.push(PushRequest { idempotency_key: "k".into(), batch: batch(json!({"a": 1})) }).await.unwrap();
    assert_eq!((ok.accepted.len(), ok.replayed), (1, false));
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn keys_are_checked_first() {
    let store: Arc<dyn ServerStore> = Arc::new(crate::SqliteServerStore::open_in_memory().unwrap());
    let api = SyncService::new(store, Limits::default()).for_scope(Scope::new("t", "u"));
    let missing = api.push(PushRequest { idempotency_key: String::new(), batch: batch(json!({})) }).await;
    assert_eq!(missing.unwrap_err().code(), Some(Code::IdempotencyKeyMissing));
    let bad = api.push(PushRequest { idempotency_key: "k\n".into(), batch: batch(json!({})) }).await;
    assert_eq!(bad.unwrap_err().code(), Some(Code::InvalidRequest));
    let long = api.push(PushRequest { idempotency_key: "k".repeat(256), batch: batch(json!({})) }).await;
    assert_eq!(long.unwrap_err().code(), Some(Code::InvalidRequest));
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn pull_limits_and_record_names_are_checked() {
    let store: Arc<dyn ServerStore> = Arc::new(crate::SqliteServerStore::open_in_memory().unwrap());
    let api = SyncService::new(store, Limits::default()).for_scope(Scope::new("t", "u"));
    let zero = api.pull(PullRequest { cursor: None, limit: Some(0) }).await.unwrap_err();
    assert_eq!(zero.code(), Some(Code::InvalidRequest));
    let empty = api.pull(PullRequest { cursor: None, limit: Some(5000) }).await.unwrap();
    assert_eq!((empty.changes.len(), empty.cursor.as_str(), empty.has_more), (0, "c0", false));
    let ahead = api.pull(PullRequest { cursor: Some("c1".into()), limit: None }).await.unwrap_err();
    assert_eq!(ahead.code(), Some(Code::CursorExpired));
    let bad_entity = api.record("1notes", "r1").await.unwrap_err();
    assert_eq!(bad_entity.code(), Some(Code::InvalidRequest));
    let bad_id = api.record("notes", "a/b").await.unwrap_err();
    assert_eq!(bad_id.code(), Some(Code::InvalidRequest));
    let missing = api.record("notes", "r1").await.unwrap_err();
    assert_eq!(missing.code(), Some(Code::NotFound));
}
