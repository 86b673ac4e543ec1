//! gRPC as stock clients see it: the generated client from the public proto with raw metadata,
//! the standard health and reflection services, idempotency keys shared with HTTP, the message
//! limit's status, and `converge client --server grpc://…`.

use converge_grpc::pb;
use converge_grpc::pb::sync_client::SyncClient;
use serde_json::json;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic_types::StatusExt;

use crate::idempotency::{batch, mutation, push, uuid};
use crate::{bin, server};

async fn channel(port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await.expect("connect")
}

fn with_auth<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert("authorization", MetadataValue::try_from(format!("Bearer {token}")).unwrap());
    req
}

fn push_request(token: &str, key: &str, msg: pb::PushRequest) -> tonic::Request<pb::PushRequest> {
    let mut req = with_auth(msg, token);
    req.metadata_mut().insert("idempotency-key", MetadataValue::try_from(key).unwrap());
    req
}

fn create(op_id: &str, record_id: &str, patch: &str) -> pb::Mutation {
    pb::Mutation {
        op_id: op_id.into(),
        entity: "notes".into(),
        record_id: record_id.into(),
        op: pb::Op::Create as i32,
        base_version: 0,
        patch: patch.into(),
        hlc: "1764064800000-0000-dev-a".into(),
        check: pb::CheckMode::Unspecified as i32,
    }
}

/// The reason and domain of a status's `ErrorInfo`.
fn reason(status: &tonic::Status) -> (tonic::Code, String, String) {
    let info = status.get_error_details().error_info().cloned().expect("an ErrorInfo");
    (status.code(), info.reason, info.domain)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_serve_stock_tools() {
    let srv = server();
    let ch = channel(srv.grpc_port).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    for service in ["", "converge.v1.Sync"] {
        let req = tonic_health::pb::HealthCheckRequest { service: service.into() };
        let status = health.check(req).await.expect("health check").into_inner().status;
        assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32, "{service:?}");
    }
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(ch);
    let ask = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection.server_reflection_info(tokio_stream::iter([ask])).await.unwrap().into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a list of services");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["converge.v1.Sync", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_sent_over_http_and_resent_over_grpc_replays() {
    let srv = server();
    let token = srv.token("t1", "u1").unwrap();
    let (op_id, rid) = (uuid(), uuid());
    let body = batch(vec![mutation(&op_id, &rid, "create", 0, json!({"title": "once"}))]);
    let first = push(&srv.url(), Some(&token), Some("cross-1"), body).await;
    assert_eq!(first.status, 200);
    let mut grpc = SyncClient::new(channel(srv.grpc_port).await);
    let msg =
        pb::PushRequest { device_id: "dev-a".into(), mutations: vec![create(&op_id, &rid, r#"{"title":"once"}"#)] };
    let resp = grpc.push(push_request(&token, "cross-1", msg.clone())).await.expect("replayed");
    assert_eq!(resp.metadata().get("idempotent-replayed").map(|v| v.to_str().unwrap()), Some("true"));
    let resp = resp.into_inner();
    assert_eq!(resp.accepted.len(), 1);
    assert_eq!((resp.accepted[0].op_id.as_str(), resp.accepted[0].version), (op_id.as_str(), 1));
    // Another body under the key: refused with the contract's code in ErrorInfo.
    let mut other = msg;
    other.mutations[0].patch = r#"{"title":"twice"}"#.into();
    let e = grpc.push(push_request(&token, "cross-1", other)).await.unwrap_err();
    assert_eq!(reason(&e), (tonic::Code::FailedPrecondition, "idempotency_key_reused".into(), "converge.dev".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_clients_get_the_contracts_statuses() {
    let srv = server();
    let token = srv.token("t1", "u1").unwrap();
    let mut grpc = SyncClient::new(channel(srv.grpc_port).await).max_encoding_message_size(8 << 20);
    // No key.
    let msg = pb::PushRequest { device_id: "dev-1".into(), mutations: vec![create(&uuid(), "r1", "")] };
    let e = grpc.push(with_auth(msg.clone(), &token)).await.unwrap_err();
    assert_eq!(reason(&e).1, "idempotency_key_missing");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    // No token.
    let e = grpc.pull(tonic::Request::new(pb::PullRequest::default())).await.unwrap_err();
    assert_eq!(reason(&e), (tonic::Code::Unauthenticated, "unauthorized".into(), "converge.dev".into()));
    // A patch that is not a JSON object, an op left unspecified.
    let mut bad = msg.clone();
    bad.mutations[0].patch = "[1]".into();
    let e = grpc.push(push_request(&token, "k1", bad)).await.unwrap_err();
    assert_eq!((e.code(), e.message()), (tonic::Code::InvalidArgument, "mutations[0].patch is not a JSON object"));
    let mut bad = msg.clone();
    bad.mutations[0].op = pb::Op::Unspecified as i32;
    assert_eq!(reason(&grpc.push(push_request(&token, "k2", bad)).await.unwrap_err()).1, "invalid_request");
    // A message over 1 MiB.
    let mut big = msg;
    big.mutations[0].patch = format!(r#"{{"body":"{}"}}"#, "x".repeat(1 << 20));
    let e = grpc.push(push_request(&token, "k3", big)).await.unwrap_err();
    assert_eq!(reason(&e), (tonic::Code::ResourceExhausted, "body_too_large".into(), "converge.dev".into()));
    // A record that does not exist, and a cursor the server never gave out.
    let e = grpc
        .get_record(with_auth(pb::GetRecordRequest { entity: "notes".into(), record_id: "nope".into() }, &token))
        .await
        .unwrap_err();
    assert_eq!(reason(&e).0, tonic::Code::NotFound);
    let e = grpc.subscribe(with_auth(pb::SubscribeRequest { cursor: "c99".into() }, &token)).await.unwrap_err();
    assert_eq!(reason(&e), (tonic::Code::FailedPrecondition, "cursor_expired".into(), "converge.dev".into()));
    // Nothing of it was applied.
    let page = grpc.pull(with_auth(pb::PullRequest::default(), &token)).await.unwrap().into_inner();
    assert!(page.changes.is_empty());
}

#[test]
fn the_client_commands_work_over_grpc() {
    let srv = server();
    let token = srv.token("t1", "u1").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    let url = srv.grpc_url();
    let run = |db: &std::path::Path, args: &[&str]| {
        let mut all = vec!["client", "--db", db.to_str().unwrap(), "--server", &url, "--token", &token];
        all.extend_from_slice(args);
        converge_test_support::converge(bin(), &all).expect("converge client")
    };
    run(&a, &["put", "notes", "n1", r#"{"title": "from a"}"#]);
    assert!(run(&a, &["sync"]).contains("1 accepted"));
    run(&b, &["sync"]);
    let got: serde_json::Value = serde_json::from_str(&run(&b, &["--json", "get", "notes", "n1"])).unwrap();
    assert_eq!(got["fields"]["title"], "from a");
    // Both edit offline; the second to sync gets a conflict, kept for review.
    run(&a, &["put", "notes", "n1", r#"{"title": "A"}"#]);
    run(&b, &["put", "notes", "n1", r#"{"title": "B"}"#]);
    run(&a, &["sync"]);
    assert!(run(&b, &["sync"]).contains("1 conflicts"));
    assert!(run(&b, &["conflicts"]).contains("notes/n1"));
    let (ok, _, err) = converge_test_support::converge_status(
        bin(),
        &["client", "--db", a.to_str().unwrap(), "--server", "grpc://127.0.0.1:1", "--token", &token, "sync"],
    )
    .unwrap();
    assert!(!ok && err.contains("offline"), "{err}");
}
