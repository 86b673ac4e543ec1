//! Live change notices over both wires against a real `converge serve`: a subscriber whose
//! server restarts sees its stream end, subscribes again with its cursor, and misses nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use converge_core::wire::{PullRequest, PushBatch, PushRequest};
use converge_core::{ErrorClass, Mutation, Op, StaticToken, SyncApi};
use converge_test_support::{ServerProcess, obj};
use serde_json::json;

use crate::server;

fn api(url: &str, token: &str) -> Arc<dyn SyncApi> {
    converge_connect::connect(url, Arc::new(StaticToken(token.to_owned()))).expect("connect")
}

async fn create(api: &Arc<dyn SyncApi>, record_id: &str) {
    let m = Mutation {
        op_id: uuid::Uuid::now_v7(),
        entity: "notes".into(),
        record_id: record_id.into(),
        op: Op::Create,
        base_version: 0,
        patch: obj(json!({"n": 1})),
        hlc: "1764064800000-0000-dev-1".parse().unwrap(),
        check: Default::default(),
    };
    let batch = PushBatch { device_id: "dev-1".into(), mutations: vec![m] };
    let r = api.push(PushRequest { idempotency_key: uuid::Uuid::now_v7().to_string(), batch }).await.unwrap();
    assert_eq!(r.accepted.len(), 1);
}

async fn resubscribe_after_a_restart(url_of: fn(&ServerProcess) -> String) {
    let mut srv = server();
    let token = srv.token("t1", "u1").unwrap();
    let reader = api(&url_of(&srv), &token);
    create(&reader, "r1").await;
    let cursor = reader.pull(PullRequest::default()).await.unwrap().cursor;
    let mut sub = reader.subscribe(Some(cursor.clone())).await.unwrap();

    srv.kill().unwrap();
    let end = tokio::time::timeout(Duration::from_secs(20), sub.next()).await.expect("the stream ends with the server");
    if let Some(item) = end {
        let e = item.expect_err("no notice from a dead server");
        assert_eq!(e.class(), ErrorClass::Retryable, "{}", e.report());
    }

    srv.restart().unwrap();
    // Another device writes while the reader is not subscribed.
    create(&api(&url_of(&srv), &token), "r2").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sub = loop {
        match reader.subscribe(Some(cursor.clone())).await {
            Ok(sub) => break sub,
            Err(e) if e.class() == ErrorClass::Retryable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("subscribing again failed: {}", e.report()),
        }
    };
    let notice = tokio::time::timeout(Duration::from_secs(5), sub.next()).await.expect("a notice at once");
    let notice = notice.expect("an open stream").expect("a notice");
    let page = reader.pull(PullRequest { cursor: Some(cursor), limit: None }).await.unwrap();
    assert_eq!(page.changes.iter().map(|c| c.record_id.as_str()).collect::<Vec<_>>(), ["r2"]);
    assert_eq!(notice.cursor, page.cursor, "the notice names the feed's end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_resumes_after_a_server_restart_over_http() {
    resubscribe_after_a_restart(ServerProcess::url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_resumes_after_a_server_restart_over_grpc() {
    resubscribe_after_a_restart(ServerProcess::grpc_url).await;
}

/// The raw event stream, as a browser's `EventSource` reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_speaks_sse() {
    let srv = server();
    let token = srv.token("t1", "u1").unwrap();
    let writer = api(&srv.url(), &token);
    create(&writer, "r1").await;
    let end = writer.pull(PullRequest::default()).await.unwrap().cursor;
    let http = crate::http();
    let url = format!("{}/v1/sync/events", srv.url());
    let mut resp = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let first = tokio::time::timeout(Duration::from_secs(5), resp.chunk()).await.unwrap().unwrap().unwrap();
    let text = String::from_utf8(first.to_vec()).unwrap();
    assert_eq!(text, format!("id: {end}\nevent: changes\ndata: {{\"cursor\":\"{end}\"}}\n\n"));
    // Last-Event-ID stands for the cursor: from the end, nothing comes.
    let mut quiet = http.get(&url).bearer_auth(&token).header("last-event-id", &end).send().await.unwrap();
    assert_eq!(quiet.status(), 200);
    assert!(tokio::time::timeout(Duration::from_millis(300), quiet.chunk()).await.is_err());
    // Refusals come as problem+json before the stream opens.
    let gone = http.get(format!("{url}?cursor=c99")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(
        (gone.status().as_u16(), gone.headers()["content-type"].to_str().unwrap()),
        (410, "application/problem+json")
    );
    let bad = http.get(format!("{url}?cursor=x&other=1")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    let anon = http.get(&url).send().await.unwrap();
    assert_eq!(anon.status(), 401);
}
