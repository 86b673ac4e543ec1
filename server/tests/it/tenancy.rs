//! Tenant isolation: another tenant's records, feed, op ids and keys are invisible.

use converge_core::Code;
use converge_core::wire::PullRequest;
use serde_json::json;

use crate::support::*;

async fn another_tenants_records_and_changes_are_invisible(backend: Backend) {
    let server = Server::new(backend).await;
    let acme = server.api("acme", "alice");
    let globex = server.api("globex", "alice");
    let op = create("n1", json!({"secret": "acme only"}));
    push(&acme, vec![op.clone(), create("n2", json!({}))]).await;

    let err = globex.record("notes", "n1").await.unwrap_err();
    assert_eq!(err.code(), Some(Code::NotFound));
    assert!(globex.pull(PullRequest::default()).await.unwrap().changes.is_empty());
    // An update of acme's record from globex does not exist there.
    let r = push(&globex, vec![update("n1", 1, json!({"secret": "stolen"}))]).await;
    assert_eq!(r.rejected[0].code, Code::NotFound);
    // The same op id is globex's own op: applied there, not answered from acme's results.
    let r = push(&globex, vec![op.clone()]).await;
    assert_eq!(r.accepted[0].version, 1);
    // The same idempotency key runs in each tenant.
    acme.push(request("shared", vec![create("k1", json!({}))])).await.unwrap();
    let r = globex.push(request("shared", vec![create("k2", json!({}))])).await.unwrap();
    assert!(!r.replayed);

    let acme_feed = acme.pull(PullRequest::default()).await.unwrap();
    let ids: Vec<&str> = acme_feed.changes.iter().map(|c| c.record_id.as_str()).collect();
    assert_eq!(ids, ["n1", "n2", "k1"]);
    assert_eq!(fields(&acme, "n1").await, json!({"secret": "acme only"}));
    let globex_feed = globex.pull(PullRequest::default()).await.unwrap();
    let ids: Vec<&str> = globex_feed.changes.iter().map(|c| c.record_id.as_str()).collect();
    assert_eq!(ids, ["n1", "k2"]);
    assert_eq!((server.stats("acme").await.seq, server.stats("globex").await.seq), (3, 2));
}

on_every_backend!(another_tenants_records_and_changes_are_invisible,);
