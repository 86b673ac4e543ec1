//! Compaction: old tombstones, op results and idempotency responses go; the horizon moves past
//! every removed tombstone so a cursor that could miss one expires; live records, young rows and
//! other tenants stay.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use converge_core::server_store::{CompactStats, FeedHead, FeedPage, PushTx, ServerStore};
use converge_core::wire::{Change, PullRequest, PullResponse};
use converge_core::{Code, SyncApi, Tenancy};
use serde_json::json;

use crate::support::*;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A cutoff strictly after everything written so far and strictly before everything written
/// after it returns (the store stamps rows in whole milliseconds).
async fn cutoff() -> u64 {
    tokio::time::sleep(Duration::from_millis(5)).await;
    let t = now_ms();
    tokio::time::sleep(Duration::from_millis(5)).await;
    t
}

async fn pull(api: &Arc<dyn SyncApi>, cursor: Option<&str>) -> converge_core::Result<PullResponse> {
    api.pull(PullRequest { cursor: cursor.map(str::to_owned), limit: None }).await
}

/// (record id, deleted) of the whole feed, from the start.
async fn feed(api: &Arc<dyn SyncApi>) -> Vec<(String, bool)> {
    let page = pull(api, None).await.unwrap();
    assert!(!page.has_more);
    page.changes.into_iter().map(|c| (c.record_id, c.deleted)).collect()
}

fn ids(feed: &[(String, bool)]) -> Vec<&str> {
    feed.iter().map(|(id, _)| id.as_str()).collect()
}

async fn an_old_tombstone_goes_and_only_cursors_that_could_miss_it_expire(backend: Backend) {
    let server = Server::new(backend).await;
    let api = server.api("acme", "alice");
    push(&api, vec![create("a", json!({})), create("b", json!({})), create("c", json!({}))]).await;
    let before_delete = pull(&api, None).await.unwrap().cursor;
    assert_eq!(before_delete, "c3");
    push(&api, vec![delete("a", 1)]).await; // seq 4
    let after_old_delete = pull(&api, Some(&before_delete)).await.unwrap().cursor;
    assert_eq!(after_old_delete, "c4");
    let cutoff = cutoff().await;
    push(&api, vec![delete("b", 1)]).await; // seq 5: younger than the cutoff

    let stats = server.store.compact(cutoff).await.unwrap();
    assert_eq!(stats, CompactStats { tombstones: 1, op_results: 4, idempotency_keys: 2, tenants: 1 });
    assert_eq!(server.stats("acme").await.horizon, 4);

    // A cursor from before the removed tombstone could miss it: expired.
    for old in ["c0", "c2", before_delete.as_str()] {
        let err = pull(&api, Some(old)).await.unwrap_err();
        assert_eq!(err.code(), Some(Code::CursorExpired), "{old}");
    }
    // A cursor at the horizon had seen the tombstone; it goes on and gets the young one.
    let next = pull(&api, Some(&after_old_delete)).await.unwrap();
    assert_eq!(next.changes.len(), 1);
    assert_eq!((next.changes[0].record_id.as_str(), next.changes[0].deleted), ("b", true));
    assert!(pull(&api, Some(&next.cursor)).await.unwrap().changes.is_empty());
    // From the start: the live record (older than the cutoff, still there) and the young tombstone.
    assert_eq!(feed(&api).await, [("c".to_owned(), false), ("b".to_owned(), true)]);
    assert_eq!(api.record("notes", "a").await.unwrap_err().code(), Some(Code::NotFound));
    assert!(api.record("notes", "b").await.unwrap().deleted);
    assert_eq!(server.stats("acme").await.records, 2);
}

async fn live_records_are_never_removed_however_old(backend: Backend) {
    let server = Server::new(backend).await;
    let api = server.api("acme", "alice");
    let creates = (0..20).map(|i| create(&format!("r{i}"), json!({"n": i}))).collect();
    push(&api, creates).await;
    let deletes = (0..20).filter(|i| i % 3 == 0).map(|i| delete(&format!("r{i}"), 1)).collect();
    push(&api, deletes).await; // seq 21..=27
    push(&api, vec![update("r1", 1, json!({"n": "one"}))]).await; // seq 28, after every tombstone
    let live_before: Vec<_> = feed(&api).await.into_iter().filter(|(_, deleted)| !deleted).collect();
    assert_eq!(live_before.len(), 13);

    // A cutoff later than everything: every tombstone goes, no live record does.
    let stats = server.store.compact(u64::MAX).await.unwrap();
    assert_eq!(stats.tombstones, 7);
    assert_eq!(feed(&api).await, live_before);
    assert_eq!(server.stats("acme").await.records, 13);
    // The horizon is the last removed tombstone's sequence, not the tenant's sequence: a cursor
    // that saw every tombstone keeps going.
    let stats = server.stats("acme").await;
    assert_eq!((stats.horizon, stats.seq), (27, 28));
    let page = pull(&api, Some("c27")).await.unwrap();
    assert_eq!(page.changes.len(), 1);
    assert_eq!(serde_json::Value::Object(page.changes[0].fields.clone()), json!({"n": "one"}));
    assert_eq!(pull(&api, Some("c26")).await.unwrap_err().code(), Some(Code::CursorExpired));
}

async fn expired_op_results_and_idempotency_keys_run_as_new(backend: Backend) {
    let server = Server::new(backend).await;
    let api = server.api("acme", "alice");
    let first = request("key-1", vec![create("n1", json!({"title": "t"}))]);
    assert_eq!(api.push(first.clone()).await.unwrap().accepted[0].version, 1);
    api.push(request("key-0", vec![create("n0", json!({}))])).await.unwrap();
    let edit = update("n1", 1, json!({"title": "t2"}));
    let resp = push(&api, vec![edit.clone()]).await;
    assert_eq!(resp.accepted[0].version, 2);
    // Before compaction: the key replays and the op id answers its stored outcome.
    assert!(api.push(first.clone()).await.unwrap().replayed);
    assert_eq!(push(&api, vec![edit.clone()]).await.accepted[0].version, 2);
    assert_eq!(server.stats("acme").await.seq, 3);

    let stats = server.store.compact(cutoff().await).await.unwrap();
    assert_eq!((stats.op_results, stats.idempotency_keys, stats.tombstones), (3, 4, 0));

    // After: the same key and body run again (the create now conflicts with the record)...
    let again = api.push(first).await.unwrap();
    assert!(!again.replayed);
    assert_eq!((again.accepted.len(), again.conflicts.len()), (0, 1));
    // ...an expired key takes another body instead of 422...
    let other = api.push(request("key-0", vec![create("n2", json!({}))])).await.unwrap();
    assert_eq!((other.accepted.len(), other.replayed), (1, false));
    // ...and the resent op id is applied as a new op: a new version.
    assert_eq!(push(&api, vec![edit]).await.accepted[0].version, 3);
    assert_eq!(fields(&api, "n1").await, json!({"title": "t2"}));
}

async fn another_tenants_young_rows_are_untouched(backend: Backend) {
    let server = Server::new(backend).await;
    let old = server.api("old", "alice");
    push(&old, vec![create("a", json!({}))]).await;
    push(&old, vec![delete("a", 1)]).await;
    let cutoff = cutoff().await;
    let young = server.api("young", "alice");
    let req = request("k", vec![create("x", json!({}))]);
    young.push(req.clone()).await.unwrap();
    push(&young, vec![delete("x", 1)]).await;
    let young_before = server.stats("young").await;

    let stats = server.store.compact(cutoff).await.unwrap();
    assert_eq!(stats, CompactStats { tombstones: 1, op_results: 2, idempotency_keys: 2, tenants: 1 });
    assert_eq!(server.stats("old").await.horizon, 2);
    assert_eq!(server.stats("young").await, young_before);
    assert_eq!(young_before.horizon, 0);
    assert!(young.push(req).await.unwrap().replayed);
    assert_eq!(feed(&young).await, [("x".to_owned(), true)]);
    assert_eq!(pull(&young, Some("c0")).await.unwrap().changes.len(), 1);
}

async fn compacting_twice_is_a_no_op(backend: Backend) {
    let server = Server::new(backend).await;
    let api = server.api("acme", "alice");
    push(&api, vec![create("a", json!({})), create("b", json!({}))]).await;
    push(&api, vec![delete("a", 1)]).await;
    let cutoff = cutoff().await;
    let first = server.store.compact(cutoff).await.unwrap();
    assert_eq!(first.tombstones, 1);
    let after_first = (server.stats("acme").await, feed(&api).await);
    assert_eq!(server.store.compact(cutoff).await.unwrap(), CompactStats::default());
    assert_eq!((server.stats("acme").await, feed(&api).await), after_first);
}

async fn the_horizon_never_moves_back(backend: Backend) {
    let server = Server::new(backend).await;
    let api = server.api("acme", "alice");
    push(&api, vec![create("a", json!({})), create("b", json!({})), create("c", json!({}))]).await;
    push(&api, vec![delete("a", 1)]).await; // seq 4
    push(&api, vec![update("b", 1, json!({"x": 1}))]).await; // seq 5
    server.advance_horizon("acme", 5).await;
    let stats = server.store.compact(cutoff().await).await.unwrap();
    assert_eq!(stats.tombstones, 1);
    assert_eq!(server.stats("acme").await.horizon, 5);
}

async fn the_service_compacts_by_retention(backend: Backend) {
    let server = Server::new(backend).await;
    let api = server.api("acme", "alice");
    push(&api, vec![create("a", json!({}))]).await;
    push(&api, vec![delete("a", 1)]).await;
    // Everything is younger than a day: nothing goes.
    assert_eq!(server.service.compact(Duration::from_secs(86_400)).await.unwrap(), CompactStats::default());
    assert_eq!(server.stats("acme").await.records, 1);
    // With no retention, everything written before now goes.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let stats = server.service.compact(Duration::ZERO).await.unwrap();
    assert_eq!(stats, CompactStats { tombstones: 1, op_results: 2, idempotency_keys: 2, tenants: 1 });
    assert_eq!(server.stats("acme").await.records, 0);
    assert_eq!(server.stats("acme").await.horizon, 2);
    assert!(feed(&api).await.is_empty());
}

/// A store whose own `head()` has a stale horizon (always 0), as a separate read taken before a
/// compaction would be.
struct StaleHorizon(Arc<dyn ServerStore>);

#[async_trait]
impl ServerStore for StaleHorizon {
    async fn begin_push(&self, tenant: &str) -> converge_core::Result<Box<dyn PushTx>> {
        self.0.begin_push(tenant).await
    }

    async fn changes(&self, tenant: &str, after: u64, limit: u32) -> converge_core::Result<FeedPage> {
        self.0.changes(tenant, after, limit).await
    }

    async fn head(&self, tenant: &str) -> converge_core::Result<FeedHead> {
        Ok(FeedHead { horizon: 0, ..self.0.head(tenant).await? })
    }

    async fn record(&self, tenant: &str, entity: &str, id: &str) -> converge_core::Result<Option<Change>> {
        self.0.record(tenant, entity, id).await
    }

    async fn compact(&self, older_than_ms: u64) -> converge_core::Result<CompactStats> {
        self.0.compact(older_than_ms).await
    }
}

async fn a_cursor_is_checked_against_the_horizon_read_with_its_page(backend: Backend) {
    let server = Server::new(backend).await;
    let api = server.api("acme", "alice");
    push(&api, vec![create("a", json!({})), create("b", json!({}))]).await;
    push(&api, vec![delete("a", 1)]).await;
    server.store.compact(cutoff().await).await.unwrap();
    let page = server.store.changes("acme", 3, 10).await.unwrap();
    assert_eq!(page.horizon, 3);

    let stale = server.service_over(Arc::new(StaleHorizon(server.store.clone())));
    let api = stale.scoped(scope("acme", "alice"));
    assert_eq!(pull(&api, Some("c1")).await.unwrap_err().code(), Some(Code::CursorExpired));
    assert!(pull(&api, Some("c3")).await.unwrap().changes.is_empty());
    assert_eq!(ids(&feed(&api).await), ["b"]);
}

async fn a_read_from_the_start_pages_through_a_compacted_feed(backend: Backend) {
    let server = Server::new(backend).await;
    let api = server.api("acme", "alice");
    let ids = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
    push(&api, ids.iter().map(|id| create(id, json!({}))).collect()).await; // seq 1..=10
    push(&api, ["b", "d", "f", "h", "j"].iter().map(|id| delete(id, 1)).collect()).await; // seq 11..=15
    assert_eq!(server.store.compact(cutoff().await).await.unwrap().tombstones, 5);
    assert_eq!(server.stats("acme").await.horizon, 15);

    // Pages of two from the start stop below the horizon, and go on.
    let page = |cursor: Option<String>| {
        let api = api.clone();
        async move { api.pull(PullRequest { cursor, limit: Some(2) }).await }
    };
    let mut cursor = None;
    let mut seen = Vec::new();
    let mut cursors = Vec::new();
    loop {
        let p = page(cursor.clone()).await.unwrap();
        seen.extend(p.changes.iter().map(|c| c.record_id.clone()));
        cursors.push(p.cursor.clone());
        cursor = Some(p.cursor);
        if !p.has_more {
            break;
        }
    }
    assert_eq!(seen, ["a", "c", "e", "g", "i"]);
    // The last page's cursor is the tenant's sequence, past the horizon: it survives the next
    // compaction that removes nothing it could need.
    assert_eq!(cursors, ["c3.15", "c7.15", "c15.15"]);
    push(&api, vec![update("a", 1, json!({"x": 1}))]).await; // seq 16
    let next = page(cursor.clone()).await.unwrap();
    assert_eq!(ids_of(&next), ["a"]);

    // A compaction that moves the horizon in the middle of such a read expires its cursor.
    push(&api, vec![create("k", json!({}))]).await; // seq 17
    push(&api, vec![delete("k", 1)]).await; // seq 18
    assert_eq!(server.store.compact(cutoff().await).await.unwrap().tombstones, 1);
    assert_eq!(page(Some(cursors[0].clone())).await.unwrap_err().code(), Some(Code::CursorExpired));
    assert_eq!(page(Some(next.cursor.clone())).await.unwrap_err().code(), Some(Code::CursorExpired));
    // From the start again, under the new horizon.
    let again = page(None).await.unwrap();
    assert_eq!((ids_of(&again), again.cursor.as_str()), (vec!["c", "e"], "c5.18"));
    assert_eq!(ids_of(&page(Some(again.cursor)).await.unwrap()), ["g", "i"]);
}

fn ids_of(page: &PullResponse) -> Vec<&str> {
    page.changes.iter().map(|c| c.record_id.as_str()).collect()
}

on_every_backend!(
    an_old_tombstone_goes_and_only_cursors_that_could_miss_it_expire,
    live_records_are_never_removed_however_old,
    expired_op_results_and_idempotency_keys_run_as_new,
    another_tenants_young_rows_are_untouched,
    compacting_twice_is_a_no_op,
    the_horizon_never_moves_back,
    the_service_compacts_by_retention,
    a_cursor_is_checked_against_the_horizon_read_with_its_page,
    a_read_from_the_start_pages_through_a_compacted_feed,
);
