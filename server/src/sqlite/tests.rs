//! Unit tests of the SQLite server store through the `ServerStore` trait.

use converge_core::hlc::Hlc;
use converge_core::model::{CheckMode, Op};
use serde_json::json;
use uuid::Uuid;

use super::*;

fn scope(tenant: &str) -> Scope {
    Scope { tenant: tenant.into(), user: "u".into() }
}

fn create(id: &str, n: u128) -> Mutation {
    Mutation {
        op_id: Uuid::from_u128(n),
        entity: "notes".into(),
        record_id: id.into(),
        op: Op::Create,
        base_version: 0,
        patch: json!({"title": id}).as_object().unwrap().clone(),
        hlc: Hlc { millis: 1_764_064_800_000, counter: 0, device: "d1".into() },
        check: CheckMode::Fields,
    }
}

fn update(id: &str, n: u128, base: u64, patch: serde_json::Value) -> Mutation {
    Mutation { op: Op::Update, base_version: base, patch: patch.as_object().unwrap().clone(), ..create(id, n) }
}

async fn apply(store: &SqliteServerStore, tenant: &str, key: &str, ms: &[Mutation]) -> PushResponse {
    store.apply_batch(&scope(tenant), key, "hash", ms, &converge_core::check::Rules::default()).await.unwrap().unwrap()
}

#[tokio::test]
async fn apply_batch_stores_records_op_results_and_the_response() {
    let store = SqliteServerStore::open_in_memory().unwrap();
    let ms = [create("r1", 1), update("r1", 2, 1, json!({"body": "b"})), create("r2", 3)];
    let resp = apply(&store, "t", "k1", &ms).await;
    let versions: Vec<u64> = resp.accepted.iter().map(|a| a.version).collect();
    assert_eq!(versions, [1, 2, 1]);
    assert_eq!(store.stats("t").unwrap(), TenantStats { seq: 3, version_sum: 3, records: 2, horizon: 0 });

    // The key is taken: nothing is applied and the stored push comes back.
    let again = store
        .apply_batch(&scope("t"), "k1", "other", &[create("r3", 9)], &converge_core::check::Rules::default())
        .await;
    let stored = again.unwrap().unwrap_err();
    assert_eq!((stored.body_hash.as_str(), &stored.response), ("hash", &resp));
    assert_eq!(store.stored_push(&scope("t"), "k1").await.unwrap(), Some(stored));
    assert_eq!(store.stats("t").unwrap().seq, 3);
    // Keys are per user and per tenant.
    assert!(store.stored_push(&Scope { tenant: "t".into(), user: "v".into() }, "k1").await.unwrap().is_none());
    assert!(store.stored_push(&scope("t2"), "k1").await.unwrap().is_none());

    // An op id seen before answers its stored outcome and changes nothing.
    let resent = apply(&store, "t", "k2", &[update("r1", 2, 1, json!({"body": "changed"}))]).await;
    assert_eq!(resent.accepted[0].version, 2);
    let r1 = store.record("t", "notes", "r1").await.unwrap().unwrap();
    assert_eq!(serde_json::Value::Object(r1.fields), json!({"title": "r1", "body": "b"}));
    assert_eq!(store.stats("t").unwrap().seq, 3);
}

#[tokio::test]
async fn the_feed_holds_the_latest_state_per_record_in_change_order() {
    let store = SqliteServerStore::open_in_memory().unwrap();
    apply(&store, "t", "k1", &[create("a", 1), create("b", 2), create("c", 3)]).await;
    apply(&store, "t", "k2", &[update("a", 4, 1, json!({"x": 1}))]).await;
    let page = store.changes("t", 0, 10).await.unwrap();
    let ids: Vec<&str> = page.changes.iter().map(|c| c.record_id.as_str()).collect();
    assert_eq!(ids, ["b", "c", "a"]);
    assert_eq!((page.last_seq, page.has_more), (4, false));
    let first = store.changes("t", 0, 2).await.unwrap();
    assert_eq!((first.changes.len(), first.last_seq, first.has_more), (2, 3, true));
    let rest = store.changes("t", first.last_seq, 2).await.unwrap();
    assert_eq!((rest.changes.len(), rest.last_seq, rest.has_more), (1, 4, false));
    let end = store.changes("t", 4, 2).await.unwrap();
    assert_eq!((end.changes.len(), end.last_seq, end.has_more), (0, 4, false));
    // Past the end of the feed is the client's mistake.
    let ahead = store.changes("t", 5, 2).await.unwrap_err();
    assert_eq!(ahead.code(), Some(converge_core::Code::CursorExpired));
    // Another tenant sees nothing.
    assert!(store.changes("t2", 0, 10).await.unwrap().changes.is_empty());
    assert!(store.record("t2", "notes", "a").await.unwrap().is_none());
}

#[tokio::test]
async fn the_horizon_only_moves_forward_and_not_past_the_sequence() {
    let store = SqliteServerStore::open_in_memory().unwrap();
    assert_eq!(store.horizon("t").await.unwrap(), 0);
    apply(&store, "t", "k1", &[create("a", 1), create("b", 2)]).await;
    store.advance_horizon("t", 1).unwrap();
    assert_eq!(store.horizon("t").await.unwrap(), 1);
    store.advance_horizon("t", 0).unwrap();
    assert_eq!(store.horizon("t").await.unwrap(), 1);
    store.advance_horizon("t", 99).unwrap();
    assert_eq!(store.horizon("t").await.unwrap(), 2);
}

#[tokio::test]
async fn a_file_store_reopens_with_its_data_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    {
        let store = SqliteServerStore::open(&path).unwrap();
        apply(&store, "t", "k1", &[create("a", 1)]).await;
        let mode: String = store.with_conn(|c| Ok(c.pragma_query_value(None, "journal_mode", |r| r.get(0))?)).unwrap();
        assert_eq!(mode, "wal");
    }
    let store = SqliteServerStore::open(&path).unwrap();
    assert_eq!(store.stats("t").unwrap().seq, 1);
    assert_eq!(store.record("t", "notes", "a").await.unwrap().unwrap().version, 1);
}

#[test]
fn a_file_from_a_newer_build_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", schema::LATEST + 5).unwrap();
    }
    let err = SqliteServerStore::open(&path).unwrap_err();
    assert!(matches!(err, Error::SchemaTooNew { .. }), "{err}");
    assert!(err.to_string().contains("newer"), "{err}");
    let conn = Connection::open(&path).unwrap();
    let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(v, schema::LATEST + 5);
}
