//! Pulls: paging with opaque cursors, limits, invalid and expired cursors, latest state per record.

use std::collections::HashSet;

use converge_core::Code;
use converge_core::wire::{PULL_LIMIT_MAX, PullRequest};
use serde_json::json;

use crate::support::*;

fn page(cursor: Option<&str>, limit: Option<u32>) -> PullRequest {
    PullRequest { cursor: cursor.map(str::to_owned), limit }
}

async fn pages_of_two_over_five_records_have_no_repeats_and_no_gaps(backend: Backend) {
    let server = Server::new(backend).await;
    let api = server.api("acme", "alice");
    let ids = ["a", "b", "c", "d", "e"];
    for id in ids {
        push(&api, vec![create(id, json!({"id": id}))]).await;
    }
    let mut cursor = None;
    let mut seen = Vec::new();
    let mut more = Vec::new();
    loop {
        let p = api.pull(page(cursor.as_deref(), Some(2))).await.unwrap();
        assert!(p.changes.len() <= 2);
        seen.extend(p.changes.iter().map(|c| c.record_id.clone()));
        more.push(p.has_more);
        cursor = Some(p.cursor);
        if !more.last().unwrap() {
            break;
        }
    }
    assert_eq!(seen, ids);
    assert_eq!(more, [true, true, false]);
    // At the end: nothing new, and the same cursor again.
    let end = api.pull(page(cursor.as_deref(), Some(2))).await.unwrap();
    assert!(end.changes.is_empty() && !end.has_more);
    assert_eq!(Some(end.cursor), cursor);

    // An update moves its record to the end of the feed: a client at the end sees it once.
    push(&api, vec![update("b", 1, json!({"id": "b2"}))]).await;
    let next = api.pull(page(cursor.as_deref(), None)).await.unwrap();
    assert_eq!(next.changes.len(), 1);
    assert_eq!((next.changes[0].record_id.as_str(), next.changes[0].version), ("b", 2));
    // From the start, each record once, latest state.
    let all = api.pull(page(None, None)).await.unwrap();
    let order: Vec<&str> = all.changes.iter().map(|c| c.record_id.as_str()).collect();
    assert_eq!(order, ["a", "c", "d", "e", "b"]);
}

async fn the_limit_defaults_and_clamps(backend: Backend) {
    let server = Server::new(backend).await;
    let api = server.api("acme", "alice");
    for batch in 0..3 {
        let ms = (0..400).map(|i| create(&format!("r{batch}-{i}"), json!({}))).collect();
        push(&api, ms).await;
    }
    let clamped = api.pull(page(None, Some(5000))).await.unwrap();
    assert_eq!((clamped.changes.len() as u32, clamped.has_more), (PULL_LIMIT_MAX, true));
    let default = api.pull(page(None, None)).await.unwrap();
    assert_eq!((default.changes.len(), default.has_more), (500, true));
    let rest = api.pull(page(Some(&clamped.cursor), Some(1000))).await.unwrap();
    assert_eq!((rest.changes.len(), rest.has_more), (200, false));
    let unique: HashSet<String> = clamped.changes.iter().chain(&rest.changes).map(|c| c.record_id.clone()).collect();
    assert_eq!(unique.len(), 1200);
}

async fn cursors_not_from_this_server_are_invalid_requests(backend: Backend) {
    let server = Server::new(backend).await;
    let api = server.api("acme", "alice");
    push(&api, vec![create("a", json!({}))]).await;
    for bad in ["", "garbage", "c", "c-1", "c01", "1", "c1.0", "c99999999999999999999"] {
        let err = api.pull(page(Some(bad), None)).await.unwrap_err();
        assert_eq!(err.code(), Some(Code::InvalidRequest), "{bad:?}");
    }
    // A well-formed cursor past the end of this tenant's feed (e.g. from before a restore):
    // the client must re-sync from the start, as with an expired cursor.
    let err = api.pull(page(Some("c2"), None)).await.unwrap_err();
    assert_eq!(err.code(), Some(Code::CursorExpired));
    assert!(api.pull(page(Some("c1"), None)).await.unwrap().changes.is_empty());
}

async fn a_cursor_older_than_the_horizon_is_expired(backend: Backend) {
    let server = Server::new(backend).await;
    let api = server.api("acme", "alice");
    for id in ["a", "b", "c"] {
        push(&api, vec![create(id, json!({}))]).await;
    }
    server.advance_horizon("acme", 2).await;
    for old in ["c0", "c1"] {
        let err = api.pull(page(Some(old), None)).await.unwrap_err();
        assert_eq!(err.code(), Some(Code::CursorExpired), "{old}");
        assert_eq!(Code::CursorExpired.http_status(), 410);
    }
    assert_eq!(api.pull(page(Some("c2"), None)).await.unwrap().changes.len(), 1);
    // Without a cursor a client starts over from the snapshot.
    assert_eq!(api.pull(page(None, None)).await.unwrap().changes.len(), 3);
    // Another tenant's horizon is its own.
    let other = server.api("other", "alice");
    push(&other, vec![create("x", json!({}))]).await;
    assert_eq!(other.pull(page(Some("c0"), None)).await.unwrap().changes.len(), 1);
}

on_every_backend!(
    pages_of_two_over_five_records_have_no_repeats_and_no_gaps,
    the_limit_defaults_and_clamps,
    cursors_not_from_this_server_are_invalid_requests,
    a_cursor_older_than_the_horizon_is_expired,
);
