//! The cases: each states the contract's answer and holds every target to it.

use std::sync::Arc;
use std::time::Duration;

use converge_core::wire::{PullRequest, PushBatch, PushRequest, PushResponse};
use converge_core::{CheckMode, Code, ErrorClass, Hlc, Mutation, Op, SyncApi};
use serde_json::{Value, json};
use uuid::Uuid;

use super::target::{Target, Wire};

fn fields(v: Value) -> converge_core::Fields {
    v.as_object().cloned().expect("an object")
}

fn hlc() -> Hlc {
    "1764064800000-0000-dev-1".parse().expect("hlc")
}

fn mutation(op: Op, record_id: &str, base: u64, patch: Value) -> Mutation {
    Mutation {
        op_id: Uuid::now_v7(),
        entity: "notes".into(),
        record_id: record_id.into(),
        op,
        base_version: base,
        patch: fields(patch),
        hlc: hlc(),
        check: CheckMode::Fields,
    }
}

fn request(key: &str, mutations: Vec<Mutation>) -> PushRequest {
    PushRequest { idempotency_key: key.into(), batch: PushBatch { device_id: "dev-1".into(), mutations } }
}

async fn push(api: &Arc<dyn SyncApi>, key: &str, mutations: Vec<Mutation>) -> converge_core::Result<PushResponse> {
    api.push(request(key, mutations)).await
}

/// The code of an API error, and its class.
fn code(e: converge_core::Error) -> (Code, ErrorClass) {
    let class = e.class();
    match e {
        converge_core::Error::Api(api) => (api.code, class),
        other => panic!("expected an API error, got {}", other.report()),
    }
}

async fn feed(api: &Arc<dyn SyncApi>) -> Vec<(String, u64, Value)> {
    let page = api.pull(PullRequest::default()).await.expect("pull");
    page.changes.into_iter().map(|c| (c.record_id, c.version, Value::Object(c.fields))).collect()
}

pub(crate) async fn push_outcomes(t: &Target) {
    let api = t.api("t1", "u1");
    let create = mutation(Op::Create, "r1", 0, json!({"title": "a", "body": "x"}));
    let r = push(&api, "k1", vec![create.clone()]).await.unwrap();
    assert_eq!((r.accepted.len(), r.accepted[0].version, r.replayed), (1, 1, false));

    let update = mutation(Op::Update, "r1", 1, json!({"title": "b"}));
    let stale = mutation(Op::Update, "r1", 1, json!({"title": "c"}));
    let other_field = mutation(Op::Update, "r1", 1, json!({"body": "y"}));
    let again = mutation(Op::Create, "r1", 0, json!({"title": "z"}));
    let missing = mutation(Op::Update, "nope", 4, json!({"title": "?"}));
    let r = push(&api, "k2", vec![update.clone(), stale.clone(), other_field.clone(), again.clone(), missing.clone()])
        .await
        .unwrap();
    let accepted: Vec<(Uuid, u64)> = r.accepted.iter().map(|a| (a.op_id, a.version)).collect();
    assert_eq!(accepted, vec![(update.op_id, 2), (other_field.op_id, 3)], "fields checks merge disjoint edits");
    let conflicts: Vec<Uuid> = r.conflicts.iter().map(|c| c.op_id).collect();
    assert_eq!(conflicts, vec![stale.op_id, again.op_id]);
    let c = &r.conflicts[0];
    assert_eq!(c.fields, vec!["title".to_owned()]);
    // Ops apply in order: the conflict saw the record after the first update only.
    assert_eq!((c.server.version, c.server.deleted), (2, false));
    assert_eq!(Value::Object(c.server.fields.clone()), json!({"title": "b", "body": "x"}));
    assert_eq!(c.server.meta["title"].version, 2, "the server's field clocks travel with a conflict");
    assert_eq!(r.rejected.len(), 1);
    assert_eq!(
        (r.rejected[0].op_id, r.rejected[0].code, r.rejected[0].retryable),
        (missing.op_id, Code::NotFound, false)
    );

    let big = "x".repeat(300 << 10);
    let r = push(&api, "k3", vec![mutation(Op::Update, "r1", 3, json!({"body": big}))]).await.unwrap();
    assert_eq!(r.rejected[0].code, Code::RecordTooLarge, "a record over 256 KiB is refused per op");

    let r = push(&api, "k4", vec![mutation(Op::Delete, "r1", 3, json!({}))]).await.unwrap();
    assert_eq!(r.accepted[0].version, 4);
}

pub(crate) async fn replay_gives_the_stored_answer_and_changes_nothing(t: &Target) {
    let api = t.api("t1", "u1");
    let batch = vec![mutation(Op::Create, "r1", 0, json!({"n": 1})), mutation(Op::Update, "r0", 3, json!({"n": 2}))];
    let first = push(&api, "same", batch.clone()).await.unwrap();
    let feed_before = feed(&api).await;
    let second = push(&api, "same", batch.clone()).await.unwrap();
    assert!(second.replayed, "a replay says so");
    assert_eq!(PushResponse { replayed: false, ..second }, first, "the same answer, in content");
    assert_eq!(feed(&api).await, feed_before, "nothing applied twice");
    // The key is the caller's: another user of the tenant runs the same batch as new (its op ids
    // were applied already, so it gets their stored results).
    let other = t.api("t1", "u2");
    let third = push(&other, "same", batch).await.unwrap();
    assert!(!third.replayed);
    assert_eq!(third.accepted, first.accepted);
}

pub(crate) async fn a_reused_key_is_refused(t: &Target) {
    let api = t.api("t1", "u1");
    push(&api, "k", vec![mutation(Op::Create, "r1", 0, json!({"n": 1}))]).await.unwrap();
    let e = push(&api, "k", vec![mutation(Op::Create, "r2", 0, json!({"n": 1}))]).await.unwrap_err();
    assert_eq!(code(e), (Code::IdempotencyKeyReused, ErrorClass::Rejected));
    assert_eq!(feed(&api).await.len(), 1, "the second body was not applied");
}

pub(crate) async fn an_op_id_resent_in_a_new_batch_gets_its_stored_result(t: &Target) {
    let api = t.api("t1", "u1");
    let create = mutation(Op::Create, "r1", 0, json!({"n": 1}));
    push(&api, "k1", vec![create.clone()]).await.unwrap();
    let update = mutation(Op::Update, "r1", 1, json!({"n": 2}));
    push(&api, "k2", vec![update.clone()]).await.unwrap();
    let r = push(&api, "k3", vec![create.clone(), update.clone()]).await.unwrap();
    let got: Vec<(Uuid, u64)> = r.accepted.iter().map(|a| (a.op_id, a.version)).collect();
    assert_eq!(got, vec![(create.op_id, 1), (update.op_id, 2)], "their stored results");
    assert_eq!(feed(&api).await, vec![("r1".to_owned(), 2, json!({"n": 2}))]);
}

pub(crate) async fn a_key_in_flight_is_refused_and_a_busy_store_says_when_to_retry(t: &Target) {
    let api = t.api("t1", "u1");
    let batch = vec![mutation(Op::Create, "r1", 0, json!({"n": 1}))];
    // Holding the store's write lock keeps the first push running.
    let lock = t.hold_write_lock("t1").await;
    let first = tokio::spawn({
        let (api, batch) = (api.clone(), batch.clone());
        async move { push(&api, "slow", batch).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let e = push(&api, "slow", batch.clone()).await.unwrap_err();
    assert_eq!(code(e), (Code::IdempotencyKeyInFlight, ErrorClass::Retryable));
    // Held past the store's busy timeout (5 s), the first push is answered "unavailable".
    let e = first.await.unwrap().unwrap_err();
    let retry_after = match &e {
        converge_core::Error::Api(api) => api.retry_after,
        _ => None,
    };
    assert_eq!(code(e), (Code::Unavailable, ErrorClass::Retryable));
    assert_eq!(retry_after, Some(Duration::from_secs(1)), "with when to retry");
    lock.release().await;
    let r = push(&api, "slow", batch).await.unwrap();
    assert_eq!((r.accepted.len(), r.replayed), (1, false), "a refused push was not stored under its key");
}

pub(crate) async fn bad_batches_are_refused_whole(t: &Target) {
    let api = t.api("t1", "u1");
    let good = || mutation(Op::Create, "ok", 0, json!({"n": 1}));
    let dup = good();
    let cases: Vec<(&str, PushRequest)> = vec![
        ("create with a base", request("b1", vec![good(), mutation(Op::Create, "r", 2, json!({}))])),
        ("update on base 0", request("b2", vec![good(), mutation(Op::Update, "r", 0, json!({}))])),
        ("delete with a patch", request("b3", vec![good(), mutation(Op::Delete, "r", 1, json!({"a": 1}))])),
        ("op id twice", request("b4", vec![dup.clone(), Mutation { record_id: "other".into(), ..dup }])),
        ("bad entity", request("b5", vec![good(), Mutation { entity: "0".into(), ..good() }])),
        ("bad record id", request("b6", vec![good(), Mutation { record_id: String::new(), ..good() }])),
        ("empty field name", request("b7", vec![good(), mutation(Op::Create, "r", 0, json!({"": 1}))])),
        (
            "bad device",
            PushRequest {
                batch: PushBatch { device_id: "a b".into(), mutations: vec![good()] },
                ..request("b8", vec![])
            },
        ),
    ];
    for (what, req) in cases {
        let e = api.push(req).await.expect_err(what);
        assert_eq!(code(e), (Code::InvalidRequest, ErrorClass::Rejected), "{what}");
    }
    let e = push(&api, "", vec![good()]).await.unwrap_err();
    assert_eq!(code(e), (Code::IdempotencyKeyMissing, ErrorClass::Rejected));
    let e = push(&api, "caf\u{e9}", vec![good()]).await.unwrap_err();
    assert_eq!(code(e), (Code::InvalidRequest, ErrorClass::Rejected));
    assert!(feed(&api).await.is_empty(), "nothing of a refused batch was applied");
}

pub(crate) async fn limits(t: &Target) {
    let api = t.api("t1", "u1");
    let many: Vec<Mutation> = (0..501).map(|i| mutation(Op::Create, &format!("r{i}"), 0, json!({}))).collect();
    let e = push(&api, "many", many).await.unwrap_err();
    assert_eq!(code(e), (Code::BatchTooLarge, ErrorClass::Rejected));
    // Five records of 250 KiB each: each within the record limit, together over 1 MiB.
    let big: Vec<Mutation> =
        (0..5).map(|i| mutation(Op::Create, &format!("b{i}"), 0, json!({"body": "x".repeat(250 << 10)}))).collect();
    let r = push(&api, "big", big).await;
    match t.wire {
        // A body's size is a property of a wire; the service itself has no body.
        Wire::InProcess => assert_eq!(r.unwrap().accepted.len(), 5),
        Wire::Http | Wire::Grpc => {
            assert_eq!(code(r.unwrap_err()), (Code::BodyTooLarge, ErrorClass::Rejected));
            assert!(feed(&api).await.is_empty());
        }
    }
}

pub(crate) async fn cursors_and_paging(t: &Target) {
    let api = t.api("t1", "u1");
    let ops: Vec<Mutation> = (0..5).map(|i| mutation(Op::Create, &format!("r{i}"), 0, json!({"i": i}))).collect();
    push(&api, "k", ops).await.unwrap();
    let mut cursor = None;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = api.pull(PullRequest { cursor: cursor.clone(), limit: Some(2) }).await.unwrap();
        pages += 1;
        seen.extend(page.changes.iter().map(|c| c.record_id.clone()));
        cursor = Some(page.cursor);
        if !page.has_more {
            break;
        }
    }
    assert_eq!((pages, seen), (3, vec!["r0", "r1", "r2", "r3", "r4"].into_iter().map(String::from).collect()));
    let end = api.pull(PullRequest { cursor: cursor.clone(), limit: None }).await.unwrap();
    assert!(end.changes.is_empty() && !end.has_more);
    assert_eq!(Some(end.cursor), cursor, "the end's cursor stays put");
    let all = api.pull(PullRequest { cursor: None, limit: Some(5000) }).await.unwrap();
    assert_eq!(all.changes.len(), 5, "a limit over 1000 is clamped, not refused");
    let e = api.pull(PullRequest { cursor: None, limit: Some(0) }).await.unwrap_err();
    assert_eq!(code(e), (Code::InvalidRequest, ErrorClass::Rejected));
    let e = api.pull(PullRequest { cursor: Some("not-a-cursor".into()), limit: None }).await.unwrap_err();
    assert_eq!(code(e), (Code::InvalidRequest, ErrorClass::Rejected));
    let e = api.pull(PullRequest { cursor: Some("c999".into()), limit: None }).await.unwrap_err();
    assert_eq!(code(e), (Code::CursorExpired, ErrorClass::Rejected), "a cursor ahead of the feed");
}

pub(crate) async fn records_and_tombstones(t: &Target) {
    let api = t.api("t1", "u1");
    push(&api, "k1", vec![mutation(Op::Create, "r1", 0, json!({"title": "a", "n": 12345678901234567u64}))])
        .await
        .unwrap();
    let r = api.record("notes", "r1").await.unwrap();
    assert_eq!((r.version, r.deleted), (1, false));
    assert_eq!(Value::Object(r.fields), json!({"title": "a", "n": 12345678901234567u64}), "numbers keep their value");
    push(&api, "k2", vec![mutation(Op::Delete, "r1", 1, json!({}))]).await.unwrap();
    let r = api.record("notes", "r1").await.unwrap();
    assert_eq!((r.version, r.deleted, r.fields.len()), (2, true, 0));
    assert_eq!(code(api.record("notes", "never").await.unwrap_err()), (Code::NotFound, ErrorClass::Rejected));
    assert_eq!(code(api.record("0bad", "r1").await.unwrap_err()), (Code::InvalidRequest, ErrorClass::Rejected));
}

pub(crate) async fn tenants_are_isolated(t: &Target) {
    let a = t.api("tenant-a", "u");
    let b = t.api("tenant-b", "u");
    push(&a, "k", vec![mutation(Op::Create, "secret", 0, json!({"n": 1}))]).await.unwrap();
    assert_eq!(code(b.record("notes", "secret").await.unwrap_err()), (Code::NotFound, ErrorClass::Rejected));
    assert!(feed(&b).await.is_empty());
    // The same key in another tenant is another request.
    let r = push(&b, "k", vec![mutation(Op::Create, "secret", 0, json!({"n": 2}))]).await.unwrap();
    assert_eq!((r.accepted.len(), r.replayed), (1, false));
    assert_eq!(a.record("notes", "secret").await.unwrap().fields["n"], json!(1));
}

pub(crate) async fn bad_and_expired_tokens(t: &Target) {
    let expired = converge_server::JwtAuth::new(converge_test_support::SECRET.as_bytes())
        .sign(&converge_server::Claims { sub: "u".into(), tenant: "t1".into(), exp: 1, scope: None, entities: None })
        .unwrap();
    for (token, want) in [("garbage", Code::Unauthorized), (expired.as_str(), Code::TokenExpired)] {
        let api = t.api_with_token(token);
        assert_eq!(code(api.pull(PullRequest::default()).await.unwrap_err()), (want, ErrorClass::Unauthorized));
        let e = push(&api, "k", vec![mutation(Op::Create, "r", 0, json!({}))]).await.unwrap_err();
        assert_eq!(code(e), (want, ErrorClass::Unauthorized));
        assert_eq!(code(api.record("notes", "r").await.unwrap_err()), (want, ErrorClass::Unauthorized));
        assert_eq!(code(api.subscribe(None).await.unwrap_err()), (want, ErrorClass::Unauthorized));
    }
    assert!(feed(&t.api("t1", "u")).await.is_empty(), "nothing was applied");
}

pub(crate) async fn notices(t: &Target) {
    let api = t.api("t1", "u1");
    let writer = t.api("t1", "u2");
    let within = Duration::from_secs(5);
    // From the start of an empty feed: quiet until a push.
    let mut sub = api.subscribe(None).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(300), sub.next()).await.is_err(), "no notice yet");
    push(&writer, "k1", vec![mutation(Op::Create, "r1", 0, json!({"n": 1}))]).await.unwrap();
    let notice = tokio::time::timeout(within, sub.next()).await.expect("a notice in time").unwrap().unwrap();
    let page = api.pull(PullRequest::default()).await.unwrap();
    assert_eq!(notice.cursor, page.cursor, "the notice names the feed's end");
    // A push that changes nothing (a conflict) sends nothing.
    push(&writer, "k2", vec![mutation(Op::Create, "r1", 0, json!({"n": 2}))]).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(300), sub.next()).await.is_err(), "no change, no notice");
    drop(sub);
    // Subscribing from a cursor the feed is already past: a notice at once.
    let mut late = api.subscribe(None).await.unwrap();
    let n = tokio::time::timeout(within, late.next()).await.expect("at once").unwrap().unwrap();
    assert_eq!(n.cursor, page.cursor);
    // From the feed's end: quiet.
    let mut current = api.subscribe(Some(page.cursor.clone())).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(300), current.next()).await.is_err());
    // Other tenants' pushes are not heard.
    push(&t.api("t2", "u"), "k", vec![mutation(Op::Create, "x", 0, json!({}))]).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(300), current.next()).await.is_err(), "another tenant");
    // A burst is coalesced: fewer notices than pushes, the last naming the end.
    for i in 0..10 {
        push(&writer, &format!("burst-{i}"), vec![mutation(Op::Create, &format!("b{i}"), 0, json!({}))]).await.unwrap();
    }
    let end = api.pull(PullRequest { cursor: Some(page.cursor.clone()), limit: None }).await.unwrap().cursor;
    let mut got = Vec::new();
    while got.last() != Some(&end) {
        let n = tokio::time::timeout(within, current.next()).await.expect("notices in time").unwrap().unwrap();
        got.push(n.cursor);
    }
    assert!(got.len() <= 10, "{} notices for 10 pushes", got.len());
    let e = api.subscribe(Some("bogus".into())).await.unwrap_err();
    assert_eq!(code(e), (Code::InvalidRequest, ErrorClass::Rejected));
    let e = api.subscribe(Some("c999".into())).await.unwrap_err();
    assert_eq!(code(e), (Code::CursorExpired, ErrorClass::Rejected));
}

/// A token narrowed by its claims: without `sync:write` a push is 403 `forbidden` and nothing is
/// applied; without `sync:read` so are pull, record and subscribe; a list of entity types
/// refuses each op outside it (not stored: the op may come again with a token that may) and
/// keeps other types out of the feed and the record route.
pub(crate) async fn token_scopes(t: &Target) {
    let full = t.api("t1", "u1");
    let order = |id: &str| Mutation { entity: "orders".into(), ..mutation(Op::Create, id, 0, json!({"n": 1})) };
    push(&full, "seed", vec![mutation(Op::Create, "n1", 0, json!({"a": 1})), order("o1")]).await.unwrap();
    let forbidden = (Code::Forbidden, ErrorClass::Rejected);

    let reader = t.api_with_token(&t.scoped_token("t1", "u1", Some("sync:read"), None));
    let e = push(&reader, "r1", vec![mutation(Op::Create, "n2", 0, json!({}))]).await.unwrap_err();
    assert_eq!(code(e), forbidden, "a read-only token may not push");
    assert_eq!(feed(&full).await.len(), 2, "nothing was applied");
    assert_eq!(feed(&reader).await.len(), 2, "it may pull");
    assert_eq!(reader.record("orders", "o1").await.unwrap().version, 1, "and read records");
    reader.subscribe(None).await.expect("and subscribe");

    let writer = t.api_with_token(&t.scoped_token("t1", "u1", Some("sync:write"), None));
    let r = push(&writer, "w1", vec![mutation(Op::Create, "n2", 0, json!({}))]).await.unwrap();
    assert_eq!(r.accepted.len(), 1, "a write-only token may push");
    let e = writer.pull(PullRequest { cursor: None, limit: None }).await.unwrap_err();
    assert_eq!(code(e), forbidden, "but not pull");
    assert_eq!(code(writer.record("notes", "n1").await.unwrap_err()), forbidden, "nor read a record");
    assert_eq!(code(writer.subscribe(None).await.unwrap_err()), forbidden, "nor subscribe");

    let notes_only = t.api_with_token(&t.scoped_token("t1", "u1", None, Some(&["notes".to_owned()])));
    let o2 = order("o2");
    let r = push(&notes_only, "e1", vec![mutation(Op::Create, "n3", 0, json!({})), o2.clone()]).await.unwrap();
    assert_eq!(r.accepted.len(), 1);
    assert_eq!((r.rejected.len(), r.rejected[0].code, r.rejected[0].retryable), (1, Code::Forbidden, false));
    assert_eq!(r.rejected[0].op_id, o2.op_id);
    let ids: Vec<String> = feed(&notes_only).await.into_iter().map(|(id, ..)| id).collect();
    assert_eq!(ids, ["n1", "n2", "n3"], "the feed holds only its entity types");
    assert_eq!(code(notes_only.record("orders", "o1").await.unwrap_err()), forbidden);
    // The refused op was not stored under its id: a token that may write orders applies it.
    let r = push(&full, "e2", vec![o2]).await.unwrap();
    assert_eq!(r.accepted.len(), 1, "{r:?}");
}
