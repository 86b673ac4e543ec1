//! The router through `tower::ServiceExt::oneshot`, no sockets: every error path of the wire
//! contract (status, `application/problem+json`, `code`), replays, ETags.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use converge_core::wire::Limits;
use converge_core::{ApiError, Code};
use serde_json::{Value, json};

use crate::fake::Fake;
use crate::helpers::{app, app_with, batch, creates, get, mutation, push_raw, push_req, send};

#[tokio::test]
async fn push_answers_outcomes_and_replays_byte_for_byte() {
    let fake = Fake::default();
    let app = app(&fake);
    let body = creates(2);
    let first = send(&app, push_req(Some("good"), Some("batch-1"), &body)).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert_eq!(first.headers[header::CONTENT_TYPE], "application/json");
    assert!(first.headers.get("idempotent-replayed").is_none());
    let v = first.json();
    assert_eq!(v["accepted"].as_array().unwrap().len(), 2);
    assert_eq!(v["accepted"][0]["version"], 1);
    assert!(v.get("replayed").is_none(), "replayed is a header, not a body member");

    let again = send(&app, push_req(Some("good"), Some("batch-1"), &body)).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body, first.body);

    // A create of an existing record is a conflict, an update of a missing one is rejected.
    let rid = v["accepted"][0]["record_id"].as_str().unwrap().to_owned();
    let mixed = batch(vec![mutation("create", &rid, 0), mutation("update", "missing", 3)]);
    let v = send(&app, push_req(Some("good"), Some("batch-2"), &mixed)).await.json();
    assert_eq!(v["conflicts"][0]["record_id"], rid.as_str());
    assert_eq!(v["conflicts"][0]["server"]["version"], 1);
    assert_eq!(v["rejected"][0]["code"], "not_found");
}

#[tokio::test]
async fn auth_failures_are_401_problems() {
    let app = app(&Fake::default());
    let body = creates(1);
    let r = send(&app, push_req(None, Some("k"), &body)).await;
    r.problem(401, "unauthorized");
    assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
    send(&app, push_req(Some("nope"), Some("k"), &body)).await.problem(401, "unauthorized");
    send(&app, push_req(Some("expired"), Some("k"), &body)).await.problem(401, "token_expired");
    let mut basic = push_req(None, Some("k"), &body);
    basic.headers_mut().insert(header::AUTHORIZATION, HeaderValue::from_static("Basic Z29vZA=="));
    send(&app, basic).await.problem(401, "unauthorized");
    let mut empty = push_req(None, Some("k"), &body);
    empty.headers_mut().insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
    send(&app, empty).await.problem(401, "unauthorized");
    // Auth comes before everything else about the request.
    send(&app, push_raw(None, None, Some("text/plain"), b"{".to_vec())).await.problem(401, "unauthorized");
    send(&app, get("/v1/sync/changes", None)).await.problem(401, "unauthorized");
    send(&app, get("/v1/sync/changes", Some("expired"))).await.problem(401, "token_expired");
    send(&app, get("/v1/records/notes/x", Some("bad"))).await.problem(401, "unauthorized");
}

#[tokio::test]
async fn idempotency_key_is_required_and_checked() {
    let fake = Fake::default();
    let app = app(&fake);
    let body = creates(1);
    send(&app, push_req(Some("good"), None, &body)).await.problem(400, "idempotency_key_missing");
    send(&app, push_req(Some("good"), Some(""), &body)).await.problem(400, "idempotency_key_missing");
    send(&app, push_req(Some("good"), Some(&"k".repeat(256)), &body)).await.problem(400, "invalid_request");
    for bad in [&b"a\tb"[..], &b"caf\xc3\xa9"[..]] {
        let mut req = push_req(Some("good"), None, &body);
        req.headers_mut().insert("idempotency-key", HeaderValue::from_bytes(bad).unwrap());
        send(&app, req).await.problem(400, "invalid_request");
    }
    let mut twice = push_req(Some("good"), Some("a"), &body);
    twice.headers_mut().append("idempotency-key", HeaderValue::from_static("b"));
    send(&app, twice).await.problem(400, "invalid_request");
    assert_eq!(fake.record_count(), 0, "nothing refused may be applied");
    let ok = send(&app, push_req(Some("good"), Some(&"k".repeat(255)), &body)).await;
    assert_eq!(ok.status, StatusCode::OK);
}

#[tokio::test]
async fn malformed_bodies_are_invalid_request() {
    let fake = Fake::default();
    let app = app(&fake);
    let good = mutation("create", "r1", 0);
    let with = |k: &str, v: Value| {
        let mut m = good.clone();
        m[k] = v;
        batch(vec![m])
    };
    let mut missing_field = good.clone();
    missing_field.as_object_mut().unwrap().remove("op_id");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("syntax", b"{\"device_id\": ".to_vec()),
        ("not an object", b"[]".to_vec()),
        ("missing mutations", br#"{"device_id": "d1"}"#.to_vec()),
        ("unknown top-level field", serde_json::to_vec(&json!({"device_id": "d1", "mutations": [], "x": 1})).unwrap()),
        ("unknown mutation field", serde_json::to_vec(&with("extra", json!(true))).unwrap()),
        ("missing mutation field", serde_json::to_vec(&batch(vec![missing_field])).unwrap()),
        ("wrong type", serde_json::to_vec(&with("base_version", json!("12"))).unwrap()),
        ("negative base_version", serde_json::to_vec(&with("base_version", json!(-1))).unwrap()),
        ("unknown op", serde_json::to_vec(&with("op", json!("upsert"))).unwrap()),
        ("unknown check", serde_json::to_vec(&with("check", json!("strict"))).unwrap()),
        ("malformed hlc", serde_json::to_vec(&with("hlc", json!("yesterday"))).unwrap()),
        ("bad op_id", serde_json::to_vec(&with("op_id", json!("not-a-uuid"))).unwrap()),
        ("create with base_version", serde_json::to_vec(&with("base_version", json!(3))).unwrap()),
        ("bad entity", serde_json::to_vec(&with("entity", json!("1 bad"))).unwrap()),
        ("empty body", Vec::new()),
    ];
    for (name, body) in cases {
        let r = send(&app, push_raw(Some("good"), Some("k"), Some("application/json"), body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{name}: {}", r.text());
        r.problem(400, "invalid_request");
    }
    let body = serde_json::to_vec(&creates(1)).unwrap();
    for ct in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let r = send(&app, push_raw(Some("good"), Some("k"), ct, body.clone())).await;
        r.problem(400, "invalid_request");
    }
    assert_eq!(fake.record_count(), 0);
    let ok = send(&app, push_raw(Some("good"), Some("k"), Some("application/json; charset=utf-8"), body)).await;
    assert_eq!(ok.status, StatusCode::OK);
}

#[tokio::test]
async fn size_limits_are_413_problems() {
    let fake = Fake::default();
    let small = app_with(&fake, Limits { max_body_bytes: 1000, max_batch: 2, ..Limits::default() });
    let body = serde_json::to_vec(&creates(2)).unwrap();
    assert!(body.len() <= 1000, "two creates fit: {}", body.len());
    assert_eq!(
        send(&small, push_raw(Some("good"), Some("k1"), Some("application/json"), body)).await.status,
        StatusCode::OK
    );

    let big = serde_json::to_vec(&batch(vec![{
        let mut m = mutation("create", "r1", 0);
        m["patch"] = json!({"text": "x".repeat(1100)});
        m
    }]))
    .unwrap();
    // Without a Content-Length header (the body is read up to the limit) ...
    send(&small, push_raw(Some("good"), Some("k2"), Some("application/json"), big.clone()))
        .await
        .problem(413, "body_too_large");
    // ... and with one (refused before reading).
    let mut req = push_raw(Some("good"), Some("k2"), Some("application/json"), big.clone());
    req.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(big.len()));
    send(&small, req).await.problem(413, "body_too_large");

    let three = serde_json::to_vec(&batch((0..3).map(|i| mutation("create", &format!("b{i}"), 0)).collect())).unwrap();
    assert!(three.len() <= 1000, "three short creates fit: {}", three.len());
    send(&small, push_raw(Some("good"), Some("k3"), Some("application/json"), three))
        .await
        .problem(413, "batch_too_large");
    assert_eq!(fake.record_count(), 2, "refused batches apply nothing");

    // The contract's default: 1 MiB.
    let app = app(&fake);
    let huge = serde_json::to_vec(&batch(vec![{
        let mut m = mutation("create", "r2", 0);
        m["patch"] = json!({"text": "x".repeat(1 << 20)});
        m
    }]))
    .unwrap();
    send(&app, push_raw(Some("good"), Some("k4"), Some("application/json"), huge)).await.problem(413, "body_too_large");
}

#[tokio::test]
async fn service_errors_keep_their_codes() {
    let fake = Fake::default();
    let app = app(&fake);
    let cases: Vec<(converge_core::Error, u16, &str)> = vec![
        (ApiError::new(Code::IdempotencyKeyReused, "another body").into(), 422, "idempotency_key_reused"),
        (ApiError::new(Code::IdempotencyKeyInFlight, "running").into(), 409, "idempotency_key_in_flight"),
        (ApiError::new(Code::BatchTooLarge, "too many").into(), 413, "batch_too_large"),
        (converge_core::Error::InvalidInput("bad".into()), 400, "invalid_request"),
        (converge_core::Error::store("SQLITE_CORRUPT at notes/secret-title"), 500, "internal"),
        (converge_core::Error::fatal("invariant"), 500, "internal"),
        (converge_core::Error::offline("db unreachable"), 500, "internal"),
    ];
    for (err, status, code) in cases {
        fake.fail_next(err);
        let r = send(&app, push_req(Some("good"), Some("k"), &creates(1))).await;
        let v = r.problem(status, code);
        if status == 500 {
            assert!(!r.text().contains("secret") && !r.text().contains("SQLITE"), "{v}");
        }
    }

    fake.fail_next(ApiError::new(Code::RateLimited, "slow down").with_retry_after(Duration::from_secs(3)));
    let r = send(&app, get("/v1/sync/changes", Some("good"))).await;
    r.problem(429, "rate_limited");
    assert_eq!(r.headers[header::RETRY_AFTER], "3");

    fake.fail_next(ApiError::new(Code::Unavailable, "draining").with_retry_after(Duration::from_secs(30)));
    let r = send(&app, get("/v1/records/notes/x", Some("good"))).await;
    r.problem(503, "unavailable");
    assert_eq!(r.headers[header::RETRY_AFTER], "30");
}

#[tokio::test]
async fn pull_passes_parameters_and_refuses_unknown_ones() {
    let fake = Fake::default();
    let app = app(&fake);
    send(&app, push_req(Some("good"), Some("k"), &creates(3))).await;

    let r = send(&app, get("/v1/sync/changes?limit=2", Some("good"))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["changes"].as_array().unwrap().len(), 2);
    assert_eq!(v["has_more"], true);
    let cursor = v["cursor"].as_str().unwrap().to_owned();
    let v = send(&app, get(&format!("/v1/sync/changes?cursor={cursor}&limit=10"), Some("good"))).await.json();
    assert_eq!(v["changes"].as_array().unwrap().len(), 1);
    assert_eq!(v["has_more"], false);
    let last = fake.last_pull().unwrap();
    assert_eq!((last.cursor.as_deref(), last.limit), (Some(cursor.as_str()), Some(10)));

    send(&app, get("/v1/sync/changes?cursor=", Some("good"))).await;
    assert_eq!(fake.last_pull().unwrap().cursor, None, "an empty cursor starts from the beginning");

    // Another tenant sees nothing of t1's.
    let v = send(&app, get("/v1/sync/changes", Some("other"))).await.json();
    assert_eq!(v["changes"], json!([]));

    for bad in ["?limit=abc", "?limit=-1", "?limit=", "?since=3", "?cursor=a&cursor=b", "?limit=99999999999"] {
        let r = send(&app, get(&format!("/v1/sync/changes{bad}"), Some("good"))).await;
        r.problem(400, "invalid_request");
    }
    send(&app, get("/v1/sync/changes?cursor=expired", Some("good"))).await.problem(410, "cursor_expired");
}

#[tokio::test]
async fn record_has_an_etag_and_other_tenants_get_404() {
    let fake = Fake::default();
    let app = app(&fake);
    let rid = uuid::Uuid::now_v7().to_string();
    send(&app, push_req(Some("good"), Some("k1"), &batch(vec![mutation("create", &rid, 0)]))).await;
    send(&app, push_req(Some("good"), Some("k2"), &batch(vec![mutation("update", &rid, 1)]))).await;

    let r = send(&app, get(&format!("/v1/records/notes/{rid}"), Some("good"))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::ETAG], "\"2\"");
    let v = r.json();
    assert_eq!((v["version"].as_u64(), v["record_id"].as_str()), (Some(2), Some(rid.as_str())));
    assert_eq!(v["fields"], json!({"title": "hello"}));

    send(&app, get(&format!("/v1/records/notes/{rid}"), Some("other"))).await.problem(404, "not_found");
    send(&app, get("/v1/records/notes/missing", Some("good"))).await.problem(404, "not_found");
    send(&app, get("/v1/records/notes/%FF%FE", Some("good"))).await.problem(400, "invalid_request");
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let app = app(&Fake::default());
    send(&app, get("/nope", None)).await.problem(404, "not_found");
    send(&app, get("/v1/records/notes", Some("good"))).await.problem(404, "not_found");
    let r = send(&app, get("/v1/sync/mutations", Some("good"))).await;
    r.problem(405, "invalid_request");
    assert_eq!(r.headers.get(header::ALLOW).map(|v| v.to_str().unwrap()), Some("POST"));
    let del = Request::delete("/v1/sync/changes").body(Body::empty()).unwrap();
    send(&app, del).await.problem(405, "invalid_request");
    let post = Request::post("/healthz").body(Body::empty()).unwrap();
    send(&app, post).await.problem(405, "invalid_request");
}

#[tokio::test]
async fn healthz_needs_no_auth() {
    let app = app(&Fake::default());
    let r = send(&app, get("/healthz", None)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(r.json(), json!({"status": "ok"}));
}
