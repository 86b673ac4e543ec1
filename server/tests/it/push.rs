//! Pushes: create, update, delete; the `fields`, `record` and `lww` checks; op ids applied once.

use converge_core::Code;
use converge_core::model::{CheckMode, Op};
use converge_core::wire::{Limits, PullRequest};
use serde_json::json;

use crate::support::*;

async fn create_update_delete_and_the_feed_shows_the_tombstone(backend: Backend) {
    let server = Server::new(backend).await;
    let api = server.api("acme", "alice");
    let r = push(&api, vec![create("n1", json!({"title": "hello", "body": "b"}))]).await;
    assert_eq!((r.accepted.len(), r.accepted[0].version, r.replayed), (1, 1, false));
    assert!(r.conflicts.is_empty() && r.rejected.is_empty());

    let r = push(&api, vec![update("n1", 1, json!({"title": "hi", "body": null}))]).await;
    assert_eq!(r.accepted[0].version, 2);
    assert_eq!(fields(&api, "n1").await, json!({"title": "hi"}));

    let r = push(&api, vec![delete("n1", 2)]).await;
    assert_eq!(r.accepted[0].version, 3);
    let rec = api.record("notes", "n1").await.unwrap();
    assert!(rec.deleted && rec.fields.is_empty());
    assert_eq!(rec.version, 3);

    let page = api.pull(PullRequest::default()).await.unwrap();
    assert_eq!(page.changes, vec![rec]);
    assert_eq!(server.stats("acme").await.seq, 3);
}

async fn changes_to_different_fields_merge_without_conflict(backend: Backend) {
    let server = Server::new(backend).await;
    let api = server.api("acme", "alice");
    push(&api, vec![create("n1", json!({"title": "t", "body": "b"}))]).await;
    // Both devices edited version 1; each changed another field.
    let a = push(&api, vec![update("n1", 1, json!({"title": "t-a"}))]).await;
    let b = push(&api, vec![update("n1", 1, json!({"body": "b-b"}))]).await;
    assert_eq!((a.accepted[0].version, b.accepted[0].version), (2, 3));
    assert!(b.conflicts.is_empty());
    assert_eq!(fields(&api, "n1").await, json!({"title": "t-a", "body": "b-b"}));
}

async fn the_same_field_changed_on_both_sides_is_a_conflict_and_changes_nothing(backend: Backend) {
    let server = Server::new(backend).await;
    let api = server.api("acme", "alice");
    push(&api, vec![create("n1", json!({"title": "t", "body": "b"}))]).await;
    push(&api, vec![update("n1", 1, json!({"title": "server"}))]).await;
    let op = update("n1", 1, json!({"title": "mine", "body": "b2"}));
    let r = push(&api, vec![op.clone()]).await;
    assert!(r.accepted.is_empty());
    let c = &r.conflicts[0];
    assert_eq!((c.op_id, c.fields.clone()), (op.op_id, vec!["title".to_string()]));
    assert_eq!(c.server.version, 2);
    assert_eq!(serde_json::Value::Object(c.server.fields.clone()), json!({"title": "server", "body": "b"}));
    assert_eq!(fields(&api, "n1").await, json!({"title": "server", "body": "b"}));
    assert_eq!(server.stats("acme").await.seq, 2);
}

async fn record_mode_conflicts_on_any_change_since_base(backend: Backend) {
    let server = Server::new(backend).await;
    let api = server.api("acme", "alice");
    push(&api, vec![create("o1", json!({"status": "new", "total": 10}))]).await;
    push(&api, vec![update("o1", 1, json!({"total": 12}))]).await;
    let stale = mutation(Op::Update, "o1", 1, json!({"status": "paid"}), CheckMode::Record, 5);
    let r = push(&api, vec![stale]).await;
    assert_eq!(r.conflicts.len(), 1);
    assert_eq!(r.conflicts[0].fields, vec!["total".to_string()]);
    let fresh = mutation(Op::Update, "o1", 2, json!({"status": "paid"}), CheckMode::Record, 6);
    let r = push(&api, vec![fresh]).await;
    assert_eq!(r.accepted[0].version, 3);
    assert_eq!(fields(&api, "o1").await, json!({"status": "paid", "total": 12}));
}

async fn lww_ends_the_same_whatever_order_writes_arrive_in(backend: Backend) {
    let server = Server::new(backend).await;
    let early = mutation(Op::Update, "s1", 1, json!({"done": false, "color": "red"}), CheckMode::Lww, 10);
    let late = mutation(Op::Update, "s1", 1, json!({"done": true}), CheckMode::Lww, 20);
    let mut results = Vec::new();
    for (tenant, order) in [("t1", [&early, &late]), ("t2", [&late, &early])] {
        let api = server.api(tenant, "u");
        push(&api, vec![create("s1", json!({"done": false, "color": "blue"}))]).await;
        for m in order {
            let r = push(&api, vec![m.clone()]).await;
            assert!(r.conflicts.is_empty() && r.rejected.is_empty());
        }
        results.push(fields(&api, "s1").await);
    }
    assert_eq!(results[0], json!({"done": true, "color": "red"}));
    assert_eq!(results[0], results[1]);
    for tenant in ["t1", "t2"] {
        let stats = server.stats(tenant).await;
        assert_eq!(stats.seq, stats.version_sum);
    }
}

async fn an_op_id_resent_in_a_new_batch_gets_its_stored_result_and_changes_nothing(backend: Backend) {
    let server = Server::new(backend).await;
    let api = server.api("acme", "alice");
    let create_op = create("n1", json!({"title": "t"}));
    let first = push(&api, vec![create_op.clone()]).await;
    let op = update("n1", 1, json!({"title": "t2"}));
    push(&api, vec![op.clone()]).await;
    let before = server.stats("acme").await;

    // The same op ids in a new batch, next to a new op.
    let again = push(&api, vec![create_op.clone(), op.clone(), create("n2", json!({}))]).await;
    assert_eq!(again.accepted[0], first.accepted[0]);
    assert_eq!((again.accepted[1].op_id, again.accepted[1].version), (op.op_id, 2));
    assert_eq!(again.accepted[2].record_id, "n2");
    assert_eq!(fields(&api, "n1").await, json!({"title": "t2"}));
    let after = server.stats("acme").await;
    assert_eq!((after.seq, after.records), (before.seq + 1, before.records + 1));

    // A conflict is stored too: resent after the conflict went away, it is still a conflict.
    let stale = update("n1", 1, json!({"title": "mine"}));
    assert_eq!(push(&api, vec![stale.clone()]).await.conflicts.len(), 1);
    push(&api, vec![update("n1", 2, json!({"title": "mine"}))]).await;
    assert_eq!(push(&api, vec![stale]).await.conflicts[0].server.version, 2);
}

async fn per_op_outcomes_exists_missing_and_too_large(backend: Backend) {
    let server = Server::with_limits(backend, Limits { max_record_bytes: 32, ..Limits::default() }).await;
    let api = server.api("acme", "alice");
    push(&api, vec![create("n1", json!({"a": 1}))]).await;
    let r = push(
        &api,
        vec![
            create("n1", json!({"a": 2})),
            update("missing", 1, json!({"a": 1})),
            create("big", json!({"text": "x".repeat(64)})),
            update("n1", 1, json!({"b": 2})),
        ],
    )
    .await;
    assert_eq!(r.conflicts.len(), 1);
    let codes: Vec<Code> = r.rejected.iter().map(|x| x.code).collect();
    assert_eq!(codes, [Code::NotFound, Code::RecordTooLarge]);
    assert!(r.rejected.iter().all(|x| !x.retryable));
    assert_eq!((r.accepted.len(), r.accepted[0].version), (1, 2));
    assert_eq!(api.record("notes", "big").await.unwrap_err().code(), Some(Code::NotFound));
}

async fn a_batch_with_a_wrong_shape_is_refused_whole(backend: Backend) {
    let server = Server::new(backend).await;
    let api = server.api("acme", "alice");
    let bad_delete = mutation(Op::Delete, "n2", 0, json!({}), CheckMode::Fields, 1);
    let err = api.push(request("k", vec![create("n1", json!({})), bad_delete])).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::InvalidRequest));
    assert_eq!(api.record("notes", "n1").await.unwrap_err().code(), Some(Code::NotFound));
    assert_eq!(server.stats("acme").await.seq, 0);
}

on_every_backend!(
    create_update_delete_and_the_feed_shows_the_tombstone,
    changes_to_different_fields_merge_without_conflict,
    the_same_field_changed_on_both_sides_is_a_conflict_and_changes_nothing,
    record_mode_conflicts_on_any_change_since_base,
    lww_ends_the_same_whatever_order_writes_arrive_in,
    an_op_id_resent_in_a_new_batch_gets_its_stored_result_and_changes_nothing,
    per_op_outcomes_exists_missing_and_too_large,
    a_batch_with_a_wrong_shape_is_refused_whole,
);
