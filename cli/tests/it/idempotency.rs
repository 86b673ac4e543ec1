//! Idempotency over real HTTP: replays byte for byte, reuse with another body, in flight,
//! missing or bad keys, dropped responses, and op ids resent in new batches.

use std::io::Write;
use std::time::Duration;

use serde_json::{Value, json};

use crate::{http, server};

pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    pub(crate) fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or("").to_owned()
    }
}

pub(crate) async fn push(url: &str, token: Option<&str>, key: Option<&str>, body: impl Into<reqwest::Body>) -> Answer {
    let mut req = http().post(format!("{url}/v1/sync/mutations")).header("content-type", "application/json");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    // A server refusing an oversize body may close the connection before the client has sent it
    // all, and the kernel can then reset it before the answer is read: send again (the refused
    // request changed nothing).
    let req = req.body(body);
    let mut tries = 0;
    let resp = loop {
        tries += 1;
        match req.try_clone().expect("a buffered body").send().await {
            Ok(resp) => break resp,
            Err(e) if tries < 5 => eprintln!("send failed ({e}); sending again"),
            Err(e) => panic!("request: {e}"),
        }
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    Answer { status, headers, body: resp.bytes().await.expect("body").to_vec() }
}

pub(crate) async fn get(url: &str, token: Option<&str>, path: &str) -> Answer {
    let mut req = http().get(format!("{url}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    Answer { status, headers, body: resp.bytes().await.expect("body").to_vec() }
}

pub(crate) fn mutation(op_id: &str, record_id: &str, op: &str, base: u64, patch: Value) -> Value {
    json!({"op_id": op_id, "entity": "notes", "record_id": record_id, "op": op, "base_version": base,
           "patch": patch, "hlc": "1764064800000-0000-dev-a", "check": "fields"})
}

pub(crate) fn batch(mutations: Vec<Value>) -> String {
    json!({"device_id": "dev-a", "mutations": mutations}).to_string()
}

pub(crate) fn uuid() -> String {
    uuid::Uuid::now_v7().to_string()
}

async fn version(url: &str, token: &str, id: &str) -> u64 {
    get(url, Some(token), &format!("/v1/records/notes/{id}")).await.json()["version"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_same_body_replays_byte_for_byte_and_applies_once() {
    let srv = server();
    let url = srv.url();
    let token = srv.token("t1", "u1").unwrap();
    let (rid, op) = (uuid(), uuid());
    let body = batch(vec![mutation(&op, &rid, "create", 0, json!({"title": "x"}))]);
    let first = push(&url, Some(&token), Some("key-1"), body.clone()).await;
    assert_eq!(first.status, 200);
    assert!(first.headers.get("idempotent-replayed").is_none());
    assert_eq!(first.json()["accepted"][0]["version"], json!(1));
    let again = push(&url, Some(&token), Some("key-1"), body.clone()).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.headers.get("idempotent-replayed").and_then(|v| v.to_str().ok()), Some("true"));
    assert_eq!(again.body, first.body, "a replay is byte for byte the stored response");
    assert_eq!(version(&url, &token, &rid).await, 1);

    // Same key, another body.
    let other = batch(vec![mutation(&uuid(), &uuid(), "create", 0, json!({"title": "y"}))]);
    let reused = push(&url, Some(&token), Some("key-1"), other).await;
    assert_eq!((reused.status, reused.code().as_str()), (422, "idempotency_key_reused"));

    // Keys are scoped by tenant and user: another user's identical key runs on its own.
    let token2 = srv.token("t1", "u2").unwrap();
    let body2 = batch(vec![mutation(&uuid(), &uuid(), "create", 0, json!({"title": "z"}))]);
    let theirs = push(&url, Some(&token2), Some("key-1"), body2).await;
    assert_eq!(theirs.status, 200);
    assert!(theirs.headers.get("idempotent-replayed").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rules_missing_empty_bad_and_refused_requests_are_not_stored() {
    let srv = server();
    let url = srv.url();
    let token = srv.token("t1", "u1").unwrap();
    let body = batch(vec![mutation(&uuid(), &uuid(), "create", 0, json!({"a": 1}))]);
    let missing = push(&url, Some(&token), None, body.clone()).await;
    assert_eq!((missing.status, missing.code().as_str()), (400, "idempotency_key_missing"));
    let empty = push(&url, Some(&token), Some(""), body.clone()).await;
    assert_eq!((empty.status, empty.code().as_str()), (400, "idempotency_key_missing"));
    let long = push(&url, Some(&token), Some(&"k".repeat(256)), body.clone()).await;
    assert_eq!((long.status, long.code().as_str()), (400, "invalid_request"));
    // A request refused before it ran is not stored: the corrected retry with the same key runs.
    let bad = push(&url, Some(&token), Some("retry-me"), "{\"device_id\": 5}").await;
    assert_eq!((bad.status, bad.code().as_str()), (400, "invalid_request"));
    let unauth = push(&url, None, Some("retry-me"), body.clone()).await;
    assert_eq!(unauth.status, 401);
    let ok = push(&url, Some(&token), Some("retry-me"), body).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json()["accepted"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_op_id_resent_in_a_new_batch_gets_its_stored_result_and_changes_nothing() {
    let srv = server();
    let url = srv.url();
    let token = srv.token("t1", "u1").unwrap();
    let (rid, op1, op2) = (uuid(), uuid(), uuid());
    let create = mutation(&op1, &rid, "create", 0, json!({"title": "first"}));
    assert_eq!(push(&url, Some(&token), Some("b1"), batch(vec![create.clone()])).await.status, 200);
    let update = mutation(&op2, &rid, "update", 1, json!({"title": "second"}));
    let r = push(&url, Some(&token), Some("b2"), batch(vec![update.clone()])).await;
    assert_eq!(r.json()["accepted"][0]["version"], json!(2));
    let feed_before = get(&url, Some(&token), "/v1/sync/changes").await.body;
    // Both ops again, in a new batch under a new key: stored results, no change.
    let r = push(&url, Some(&token), Some("b3"), batch(vec![create, update])).await;
    assert_eq!(r.status, 200);
    let accepted = r.json()["accepted"].as_array().cloned().unwrap();
    assert_eq!(accepted.len(), 2);
    assert_eq!(accepted[0]["version"], json!(1), "the create's stored result");
    assert_eq!(accepted[1]["version"], json!(2), "the update's stored result");
    assert_eq!(version(&url, &token, &rid).await, 2);
    assert_eq!(get(&url, Some(&token), "/v1/sync/changes").await.body, feed_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_response_then_a_resend_applies_once() {
    let srv = server();
    let url = srv.url();
    let token = srv.token("t1", "u1").unwrap();
    let rid = uuid();
    let body = batch(vec![mutation(&uuid(), &rid, "create", 0, json!({"title": "once"}))]);
    // Send the request on a raw socket and hang up without reading the answer.
    {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", srv.port)).unwrap();
        write!(
            s,
            "POST /v1/sync/mutations HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nIdempotency-Key: drop-1\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        s.flush().unwrap();
    }
    let mut answer = None;
    for _ in 0..50 {
        let r = push(&url, Some(&token), Some("drop-1"), body.clone()).await;
        if r.status == 409 {
            assert_eq!(r.code(), "idempotency_key_in_flight");
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        answer = Some(r);
        break;
    }
    let r = answer.expect("the resend got an answer");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["accepted"][0]["version"], json!(1));
    // Twice more, for good measure: still one application.
    push(&url, Some(&token), Some("drop-1"), body.clone()).await;
    assert_eq!(version(&url, &token, &rid).await, 1);
    let feed = get(&url, Some(&token), "/v1/sync/changes").await.json();
    assert_eq!(feed["changes"].as_array().map(Vec::len), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_while_the_first_request_runs_is_409() {
    let srv = server();
    let url = srv.url();
    let token = srv.token("t1", "u1").unwrap();
    let rid = uuid();
    let body = batch(vec![mutation(&uuid(), &rid, "create", 0, json!({"title": "slow"}))]);
    // Hold the server's write lock so the first request stays in flight.
    let lock = rusqlite::Connection::open(srv.db_path()).unwrap();
    lock.busy_timeout(Duration::from_secs(5)).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let first = tokio::spawn({
        let (url, token, body) = (url.clone(), token.clone(), body.clone());
        async move { push(&url, Some(&token), Some("slow-1"), body).await }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = push(&url, Some(&token), Some("slow-1"), body.clone()).await;
    assert_eq!((second.status, second.code().as_str()), (409, "idempotency_key_in_flight"));
    lock.execute_batch("ROLLBACK").unwrap();
    let first = first.await.unwrap();
    assert_eq!(first.status, 200, "{}", String::from_utf8_lossy(&first.body));
    let third = push(&url, Some(&token), Some("slow-1"), body).await;
    assert_eq!(third.status, 200);
    assert_eq!(third.body, first.body);
    assert_eq!(version(&url, &token, &rid).await, 1);
}
