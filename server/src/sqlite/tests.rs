//! Unit tests of the SQLite server store through the `ServerStore` trait.

use converge_core::hlc::Hlc;
use converge_core::model::{CheckMode, Op};
use serde_json::json;
use uuid::Uuid;

use converge_core::wire::{Accepted, Mutation, OpOutcome, PushResponse};

use super::*;

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn scope(tenant: &str) -> Scope {
    Scope::new(tenant, "u")
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

async fn apply_batch(
    store: &SqliteServerStore,
    scope: &Scope,
    key: &str,
    hash: &str,
    ms: Vec<Mutation>,
) -> converge_core::Result<std::result::Result<PushResponse, StoredPush>> {
    crate::service::apply::apply_batch(store, scope, key, hash, ms, &converge_core::check::Rules::default()).await
}

async fn apply(store: &SqliteServerStore, tenant: &str, key: &str, ms: &[Mutation]) -> PushResponse {
    apply_batch(store, &scope(tenant), key, "hash", ms.to_vec()).await.unwrap().unwrap()
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
    let again = apply_batch(&store, &scope("t"), "k1", "other", vec![create("r3", 9)]).await;
    let stored = again.unwrap().unwrap_err();
    assert_eq!((stored.body_hash.as_str(), &stored.response), ("hash", &resp));
    assert_eq!(store.stored_push(&scope("t"), "k1").await.unwrap(), Some(stored));
    assert_eq!(store.stats("t").unwrap().seq, 3);
    // Keys are per user and per tenant.
    assert!(store.stored_push(&Scope::new("t", "v"), "k1").await.unwrap().is_none());
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
    assert_eq!(store.head("t").await.unwrap().horizon, 0);
    apply(&store, "t", "k1", &[create("a", 1), create("b", 2)]).await;
    store.advance_horizon("t", 1).await.unwrap();
    assert_eq!(store.head("t").await.unwrap().horizon, 1);
    store.advance_horizon("t", 0).await.unwrap();
    assert_eq!(store.head("t").await.unwrap().horizon, 1);
    store.advance_horizon("t", 99).await.unwrap();
    assert_eq!(store.head("t").await.unwrap().horizon, 2);
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

fn delete(id: &str, n: u128, base: u64) -> Mutation {
    Mutation { op: Op::Delete, base_version: base, patch: serde_json::Map::new(), ..create(id, n) }
}

#[tokio::test]
async fn a_version_1_file_upgrades_with_its_data_and_undated_tombstones_count_as_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let recent = now_ms() - 1000;
    {
        // The file as the build that knew only version 1 left it.
        let mut conn = Connection::open(&path).unwrap();
        schema::migrate_to(&mut conn, 1).unwrap();
        conn.execute_batch(&format!(
            "INSERT INTO counters (tenant, seq, horizon) VALUES ('t', 3, 0);
             INSERT INTO records (tenant, entity, record_id, version, fields, meta, deleted, deleted_hlc, seq) VALUES
                ('t', 'notes', 'live', 1, '{{\"title\":\"x\"}}', '{{}}', 0, NULL, 1),
                ('t', 'notes', 'gone', 2, '{{}}', '{{}}', 1, '1764064800000-0000-d1', 3);
             INSERT INTO op_results (tenant, op_id, outcome, created_ms) VALUES
                ('t', '{op}', '{outcome}', {recent});
             INSERT INTO idempotency (tenant, user, key, body_hash, response, created_ms) VALUES
                ('t', 'u', 'k1', 'hash', '{{\"accepted\":[],\"conflicts\":[],\"rejected\":[]}}', {recent});",
            op = Uuid::from_u128(1),
            outcome = serde_json::to_string(&OpOutcome::Accepted(Accepted {
                op_id: Uuid::from_u128(1),
                entity: "notes".into(),
                record_id: "live".into(),
                version: 1,
            }))
            .unwrap(),
        ))
        .unwrap();
        let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
        assert_eq!(v, 1);
    }

    let store = SqliteServerStore::open(&path).unwrap();
    let version: i64 = store.with_conn(|c| Ok(c.pragma_query_value(None, "user_version", |r| r.get(0))?)).unwrap();
    assert_eq!(version, schema::LATEST);
    assert_eq!(store.stats("t").unwrap(), TenantStats { seq: 3, version_sum: 3, records: 2, horizon: 0 });
    let changed: Vec<i64> = store
        .with_conn(|c| {
            let mut stmt = c.prepare("SELECT changed_ms FROM records ORDER BY seq")?;
            let rows = stmt.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            Ok(rows)
        })
        .unwrap();
    assert_eq!(changed, [0, 0]);
    assert!(store.stored_push(&scope("t"), "k1").await.unwrap().is_some());

    // An undated tombstone is as old as can be: a cutoff a day ago removes it (and moves the
    // horizon to it); the live record and the recent op result and key stay.
    let stats = store.compact((now_ms() - 86_400_000) as u64).await.unwrap();
    assert_eq!(stats, CompactStats { tombstones: 1, op_results: 0, idempotency_keys: 0, tenants: 1 });
    assert_eq!(store.stats("t").unwrap().horizon, 3);
    assert!(store.record("t", "notes", "gone").await.unwrap().is_none());
    assert_eq!(store.record("t", "notes", "live").await.unwrap().unwrap().version, 1);
    assert!(store.stored_push(&scope("t"), "k1").await.unwrap().is_some());
    // The old op id still answers its stored outcome.
    let resent = apply(&store, "t", "k2", &[update("live", 1, 1, json!({"title": "y"}))]).await;
    assert_eq!(resent.accepted[0].version, 1);

    // A change applied after the upgrade is dated.
    apply(&store, "t", "k3", &[update("live", 2, 1, json!({"title": "y"}))]).await;
    let dated: i64 = store
        .with_conn(|c| Ok(c.query_row("SELECT changed_ms FROM records WHERE record_id = 'live'", [], |r| r.get(0))?))
        .unwrap();
    assert!(dated >= recent, "{dated}");
}

#[tokio::test]
async fn compaction_works_in_chunks_while_pushes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteServerStore::open(&dir.path().join("server.db")).unwrap();
    let creates: Vec<_> = (0..50).map(|i| create(&format!("r{i}"), 1000 + i)).collect();
    apply(&store, "t", "k-create", &creates).await;
    let deletes: Vec<_> = (0..40).map(|i| delete(&format!("r{i}"), 2000 + i, 1)).collect();
    apply(&store, "t", "k-delete", &deletes).await; // seq 51..=90
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cutoff = now_ms() as u64;
    tokio::time::sleep(Duration::from_millis(5)).await;

    // Pushes to the same tenant while compaction runs in chunks of 7.
    let pushes = tokio::spawn({
        let store = store.clone();
        async move {
            for i in 0..20u128 {
                let m = update(&format!("r{}", 40 + i % 10), 3000 + i, 1 + (i / 10) as u64, json!({"i": i as u64}));
                let resp = apply(&store, "t", &format!("k-live-{i}"), &[m]).await;
                assert_eq!(resp.accepted.len(), 1, "{resp:?}");
            }
        }
    });
    let stats = store.compact_in_chunks(cutoff, 7).await.unwrap();
    pushes.await.unwrap();
    assert_eq!(stats, CompactStats { tombstones: 40, op_results: 90, idempotency_keys: 2, tenants: 1 });
    let after = store.stats("t").unwrap();
    assert_eq!((after.records, after.seq, after.horizon), (10, 110, 90));
    let page = store.changes("t", 0, 100).await.unwrap();
    assert_eq!(page.changes.len(), 10);
    assert!(page.changes.iter().all(|c| !c.deleted && c.version == 3));
    // Exactly a multiple of the chunk left over ends too.
    apply(&store, "t", "k-more", &(0..7).map(|i| delete(&format!("r{}", 40 + i), 4000 + i, 3)).collect::<Vec<_>>())
        .await;
    let last = store.compact_in_chunks(u64::MAX, 7).await.unwrap();
    assert_eq!(last, CompactStats { tombstones: 7, op_results: 27, idempotency_keys: 21, tenants: 1 });
    assert_eq!(store.stats("t").unwrap().horizon, 117);
    // Every op result went with the push that stored it: none is left behind.
    let left: (i64, i64) = store
        .with_conn(|c| {
            Ok(c.query_row("SELECT (SELECT count(*) FROM op_results), (SELECT count(*) FROM idempotency)", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?)
        })
        .unwrap();
    assert_eq!(left, (0, 0));
}

#[test]
fn compaction_finds_its_rows_through_indexes() {
    let store = SqliteServerStore::open_in_memory().unwrap();
    let plan = |sql: &str| -> String {
        store
            .with_conn(|c| {
                let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                let rows: Vec<String> = stmt.query_map([], |r| r.get(3))?.collect::<rusqlite::Result<_>>()?;
                Ok(rows.join("\n"))
            })
            .unwrap()
    };
    let bind = |sql: &str| sql.replace("?1", "'t'").replace("?2", "5").replace("?3", "10");
    for sql in [
        compact::Kind::Tombstones.probe(),
        compact::Kind::Pushes.probe(),
        compact::REMOVE_TOMBSTONES,
        compact::OLD_PUSHES,
    ] {
        let plan = plan(&bind(sql));
        assert!(plan.contains("INDEX") && !plan.contains("SCAN"), "{sql}: {plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{sql}: {plan}");
    }
    assert!(plan(&bind(compact::Kind::Tombstones.probe())).contains("records_tombstones"));
    assert!(plan(&bind(compact::OLD_PUSHES)).contains("idempotency_age"));
}

#[tokio::test]
async fn the_write_ahead_log_stays_bounded_under_pushes_and_is_truncated_in_a_pause() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.db");
    let wal = WalOptions {
        max_bytes: 256 << 10,
        checkpoint_every_commits: 5,
        truncate_after_idle: Duration::from_millis(300),
    };
    let store = SqliteServerStore::open_with(&path, &wal).unwrap();
    let wal_file = dir.path().join("server.db-wal");
    let size = || std::fs::metadata(&wal_file).map(|m| m.len()).unwrap_or(0);
    // The log header's first salt goes up each time the log starts over.
    let generation = || converge_sqlite_support::log_salt(&wal_file);
    let body = "z".repeat(2000);
    let (mut largest, mut generations) = (0, std::collections::BTreeSet::new());
    for b in 0..400u128 {
        let batch: Vec<_> = (0..10u128)
            .map(|i| Mutation {
                patch: json!({"body": body}).as_object().unwrap().clone(),
                ..create(&format!("r{b}-{i}"), b * 100 + i)
            })
            .collect();
        apply(&store, "t", &format!("k{b}"), &batch).await;
        largest = largest.max(size());
        generations.extend(generation());
    }
    // Over 16 MiB of log was written (4000 records of 2 KB, with their op results and feed
    // entries); the log started over in place again and again instead of growing.
    assert!(generations.len() >= 4, "the log started over {} times", generations.len().saturating_sub(1));
    assert!(largest > 0 && largest <= 6 << 20, "the log grew to {largest} bytes");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while size() > 0 {
        assert!(std::time::Instant::now() < deadline, "the log stayed at {} bytes (largest {largest})", size());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = store.stats("t").unwrap();
    assert_eq!((stats.seq, stats.version_sum, stats.records), (4000, 4000, 4000));
    let check: String = store.with_conn(|c| Ok(c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?)).unwrap();
    assert_eq!(check, "ok");
}

#[tokio::test]
async fn an_op_id_twice_in_one_batch_is_applied_once() {
    // The service refuses such a batch; the store still answers the second one from the first.
    let store = SqliteServerStore::open_in_memory().unwrap();
    let resp = apply(&store, "t", "k1", &[create("r1", 7), create("r1", 7), create("r2", 8)]).await;
    let answered: Vec<(u128, u64)> = resp.accepted.iter().map(|a| (a.op_id.as_u128(), a.version)).collect();
    assert_eq!(answered, [(7, 1), (7, 1), (8, 1)]);
    assert_eq!(store.stats("t").unwrap(), TenantStats { seq: 2, version_sum: 2, records: 2, horizon: 0 });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_dropped_mid_transaction_leaves_nothing_open_for_the_next() {
    // A client that hangs up drops its push's future at any point; the next push must find the
    // writer connection with no transaction open (under load this once gave a 500).
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteServerStore::open(&dir.path().join("s.db")).unwrap();
    for i in 0..200u128 {
        let s = store.clone();
        let task = tokio::spawn(async move { apply(&s, "t", &format!("k{i}"), &[create(&format!("r{i}"), i)]).await });
        tokio::time::sleep(std::time::Duration::from_micros((i % 7 * 40) as u64)).await;
        task.abort();
        let _ = task.await;
    }
    let last = apply(&store, "t", "last", &[create("last", 10_000)]).await;
    assert_eq!(last.accepted.len(), 1);
    // Each dropped push was applied whole or not at all.
    let stats = store.stats("t").unwrap();
    assert_eq!((stats.version_sum, stats.records), (stats.seq, stats.seq), "{stats:?}");
}
