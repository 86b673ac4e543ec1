//! A table of bad inputs over real HTTP: each gets the contract's status and code as
//! problem+json, never a 500, and leaves the server's state unchanged.

use serde_json::{Value, json};

use crate::idempotency::{Answer, batch, get, mutation, push, uuid};
use crate::server;

fn assert_problem(name: &str, a: &Answer, status: u16, code: &str) {
    assert_ne!(a.status, 500, "{name}: a client mistake is never a 500");
    assert_eq!(a.status, status, "{name}: status ({})", String::from_utf8_lossy(&a.body));
    let ct = a.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(ct.starts_with("application/problem+json"), "{name}: content-type {ct}");
    let j = a.json();
    assert_eq!(j["code"], json!(code), "{name}: code");
    assert_eq!(j["status"], json!(status), "{name}: status member");
    assert!(j["title"].is_string() && j["type"].is_string() && j["detail"].is_string(), "{name}: RFC 9457 members");
}

fn with(m: &Value, key: &str, value: Value) -> Value {
    let mut m = m.clone();
    m[key] = value;
    m
}

fn without(m: &Value, key: &str) -> Value {
    let mut m = m.clone();
    m.as_object_mut().unwrap().remove(key);
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_their_codes_and_change_nothing() {
    let srv = server();
    let url = srv.url();
    let token = srv.token("acme", "u1").unwrap();
    let other_tenant = srv.token("globex", "u9").unwrap();
    let expired = srv.token_ttl("acme", "u1", "0s").unwrap();

    // Some state to protect.
    let rid = uuid();
    let seed =
        push(&url, Some(&token), Some("seed"), batch(vec![mutation(&uuid(), &rid, "create", 0, json!({"t": 1}))]))
            .await;
    assert_eq!(seed.status, 200);
    let feed = || get(&url, Some(&token), "/v1/sync/changes");
    let before = feed().await.body;

    let good = mutation(&uuid(), &rid, "update", 1, json!({"t": 2}));
    let big_patch = json!({"blob": "x".repeat(1_100_000)});
    let many: Vec<Value> = (0..501).map(|_| mutation(&uuid(), &uuid(), "create", 0, json!({}))).collect();
    let b = |m: Value| batch(vec![m]);
    let cases: Vec<(&str, Option<&str>, String, u16, &str)> = vec![
        ("malformed json", Some(&token), "{\"device_id\": \"d\", \"mutations\": [".into(), 400, "invalid_request"),
        ("not an object", Some(&token), "[1,2,3]".into(), 400, "invalid_request"),
        (
            "wrong type: base_version as string",
            Some(&token),
            b(with(&good, "base_version", json!("1"))),
            400,
            "invalid_request",
        ),
        ("wrong type: patch as array", Some(&token), b(with(&good, "patch", json!([1]))), 400, "invalid_request"),
        (
            "wrong type: mutations as object",
            Some(&token),
            json!({"device_id": "d", "mutations": {}}).to_string(),
            400,
            "invalid_request",
        ),
        ("unknown field in a mutation", Some(&token), b(with(&good, "colour", json!("red"))), 400, "invalid_request"),
        (
            "unknown top-level field",
            Some(&token),
            json!({"device_id": "d", "mutations": [], "x": 1}).to_string(),
            400,
            "invalid_request",
        ),
        ("missing op_id", Some(&token), b(without(&good, "op_id")), 400, "invalid_request"),
        ("missing hlc", Some(&token), b(without(&good, "hlc")), 400, "invalid_request"),
        ("missing mutations", Some(&token), json!({"device_id": "d"}).to_string(), 400, "invalid_request"),
        ("missing device_id", Some(&token), json!({"mutations": []}).to_string(), 400, "invalid_request"),
        ("unknown op", Some(&token), b(with(&good, "op", json!("upsert"))), 400, "invalid_request"),
        ("unknown check mode", Some(&token), b(with(&good, "check", json!("strict"))), 400, "invalid_request"),
        ("negative base_version", Some(&token), b(with(&good, "base_version", json!(-1))), 400, "invalid_request"),
        ("huge base_version", Some(&token), b(with(&good, "base_version", json!(1u64 << 60))), 400, "invalid_request"),
        ("base_version beyond u64", Some(&token), b(with(&good, "base_version", json!(1e30))), 400, "invalid_request"),
        ("malformed hlc", Some(&token), b(with(&good, "hlc", json!("yesterday"))), 400, "invalid_request"),
        ("op_id not a uuid", Some(&token), b(with(&good, "op_id", json!("op-1"))), 400, "invalid_request"),
        ("bad entity name", Some(&token), b(with(&good, "entity", json!("no/slashes"))), 400, "invalid_request"),
        (
            "create with a base_version",
            Some(&token),
            b(mutation(&uuid(), &uuid(), "create", 3, json!({}))),
            400,
            "invalid_request",
        ),
        ("oversize body", Some(&token), b(with(&good, "patch", big_patch)), 413, "body_too_large"),
        ("501 mutations", Some(&token), batch(many), 413, "batch_too_large"),
        ("missing token", None, b(good.clone()), 401, "unauthorized"),
        ("bad token", Some("not-a-jwt"), b(good.clone()), 401, "unauthorized"),
        ("expired token", Some(&expired), b(good.clone()), 401, "token_expired"),
    ];
    for (i, (name, tok, body, status, code)) in cases.into_iter().enumerate() {
        let a = push(&url, tok, Some(&format!("bad-{i}")), body).await;
        assert_problem(name, &a, status, code);
        assert_eq!(feed().await.body, before, "{name}: the server state changed");
    }

    // A batch with one bad op is refused whole: its good op is not applied either.
    let half = batch(vec![good.clone(), with(&with(&good, "op_id", json!(uuid())), "check", json!("nope"))]);
    assert_problem("half bad", &push(&url, Some(&token), Some("half"), half).await, 400, "invalid_request");
    assert_eq!(feed().await.body, before);

    // Another tenant's record is invisible: 404 on read, not_found per op on write.
    let r = get(&url, Some(&other_tenant), &format!("/v1/records/notes/{rid}")).await;
    assert_problem("another tenant's record", &r, 404, "not_found");
    let theirs = push(&url, Some(&other_tenant), Some("x-tenant"), b(good.clone())).await;
    assert_eq!(theirs.status, 200);
    assert_eq!(theirs.json()["rejected"][0]["code"], json!("not_found"));
    assert!(get(&url, Some(&other_tenant), "/v1/sync/changes").await.json()["changes"].as_array().unwrap().is_empty());
    assert_eq!(feed().await.body, before);

    // Reads: bad cursor, bad limit, unknown record, unknown route, no token.
    assert_problem(
        "bad cursor",
        &get(&url, Some(&token), "/v1/sync/changes?cursor=garbage").await,
        400,
        "invalid_request",
    );
    assert_problem("bad limit", &get(&url, Some(&token), "/v1/sync/changes?limit=abc").await, 400, "invalid_request");
    assert_problem("zero limit", &get(&url, Some(&token), "/v1/sync/changes?limit=0").await, 400, "invalid_request");
    assert_problem("unknown record", &get(&url, Some(&token), "/v1/records/notes/nope").await, 404, "not_found");
    assert_problem("unknown route", &get(&url, Some(&token), "/v1/nothing-here").await, 404, "not_found");
    assert_problem("feed without token", &get(&url, None, "/v1/sync/changes").await, 401, "unauthorized");

    // The per-op outcomes of a well-formed batch.
    let missing = mutation(&uuid(), &uuid(), "update", 1, json!({"t": 1}));
    let too_big = mutation(&uuid(), &uuid(), "create", 0, json!({"blob": "y".repeat(300 * 1024)}));
    let r = push(&url, Some(&token), Some("per-op"), batch(vec![missing, too_big])).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let codes: Vec<Value> = r.json()["rejected"].as_array().unwrap().iter().map(|x| x["code"].clone()).collect();
    assert_eq!(codes, vec![json!("not_found"), json!("record_too_large")]);
    assert_eq!(feed().await.body, before);

    // Health, metrics and the OpenAPI document need no token.
    assert_eq!(get(&url, None, "/healthz").await.status, 200);
    let metrics = get(&url, None, "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(!metrics.body.is_empty());
    let doc = get(&url, None, "/openapi.json").await.json();
    assert!(doc["openapi"].as_str().unwrap_or("").starts_with("3.1"));
    assert!(doc["paths"]["/v1/sync/mutations"]["post"].is_object());
}
