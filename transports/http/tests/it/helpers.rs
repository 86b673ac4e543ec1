//! Helpers to call the router through `tower::ServiceExt::oneshot` and to build wire bodies.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use converge_core::wire::Limits;
use converge_http::problem::PROBLEM_CONTENT_TYPE;
use converge_http::{ServerConfig, router};
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

use crate::fake::{Fake, FakeAuth};

pub(crate) fn app_with(fake: &Fake, limits: Limits) -> Router {
    crate::trace::init();
    router(Arc::new(fake.clone()), Arc::new(FakeAuth), ServerConfig::with_limits(limits))
}

pub(crate) fn app(fake: &Fake) -> Router {
    app_with(fake, Limits::default())
}

pub(crate) struct Resp {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Resp {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts a problem+json answer with this status and code; returns the body.
    #[track_caller]
    pub(crate) fn problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        assert_eq!(self.headers[header::CONTENT_TYPE], PROBLEM_CONTENT_TYPE);
        let v = self.json();
        assert_eq!(v["code"], code, "body: {v}");
        assert_eq!(v["status"], status);
        assert_eq!(v["type"], format!("https://converge.dev/problems/{code}"));
        assert!(v["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(v["detail"].is_string());
        v
    }
}

pub(crate) async fn send(app: &Router, req: Request<Body>) -> Resp {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap().to_vec();
    Resp { status, headers, body }
}

pub(crate) fn mutation(op: &str, record_id: &str, base_version: u64) -> Value {
    json!({
        "op_id": uuid::Uuid::now_v7(),
        "entity": "notes",
        "record_id": record_id,
        "op": op,
        "base_version": base_version,
        "patch": if op == "delete" { json!({}) } else { json!({"title": "hello"}) },
        "hlc": "1764064800000-0000-ios-7f3a",
        "check": "fields",
    })
}

pub(crate) fn batch(mutations: Vec<Value>) -> Value {
    json!({"device_id": "ios-7f3a", "mutations": mutations})
}

pub(crate) fn creates(n: usize) -> Value {
    batch((0..n).map(|_| mutation("create", &uuid::Uuid::now_v7().to_string(), 0)).collect())
}

pub(crate) fn push_req(token: Option<&str>, key: Option<&str>, body: &Value) -> Request<Body> {
    push_raw(token, key, Some("application/json"), serde_json::to_vec(body).unwrap())
}

pub(crate) fn push_raw(
    token: Option<&str>,
    key: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Request<Body> {
    let mut b = Request::post("/v1/sync/mutations");
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if let Some(k) = key {
        b = b.header("Idempotency-Key", k);
    }
    if let Some(ct) = content_type {
        b = b.header(header::CONTENT_TYPE, ct);
    }
    b.body(Body::from(body)).unwrap()
}

pub(crate) fn get(uri: &str, token: Option<&str>) -> Request<Body> {
    let mut b = Request::get(uri);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::empty()).unwrap()
}
