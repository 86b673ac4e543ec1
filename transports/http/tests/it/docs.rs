//! The OpenAPI document kept in step with the router, the metrics text, and the trace id of a
//! `traceparent` header recorded in the request's span.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use converge_http::server::{ROUTES, openapi};
use serde_json::Value;
use std::collections::BTreeSet;

use crate::fake::Fake;
use crate::helpers::{app, batch, creates, get, mutation, push_req, send};
use crate::trace::trace_ids;

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete", "head", "options"].contains(&method.as_str()) {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[tokio::test]
async fn openapi_document_matches_the_routes() {
    let fake = Fake::default();
    let app = app(&fake);
    let r = send(&app, get("/openapi.json", None)).await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.json();
    assert_eq!(doc, openapi(), "served document = generated document");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{}", doc["openapi"]);

    let routes: BTreeSet<(String, String)> = ROUTES.iter().map(|r| (r.method.to_owned(), r.path.to_owned())).collect();
    assert_eq!(documented(&doc), routes);

    // Every listed route is served: no 404 fallback, no 405.
    for route in ROUTES {
        let uri = route.path.replace("{entity}", "notes").replace("{record_id}", "r1");
        let mut req = Request::builder().method(route.method).uri(&uri);
        if route.auth {
            req = req.header(header::AUTHORIZATION, "Bearer good");
        }
        let resp = send(&app, req.body(Body::empty()).unwrap()).await;
        assert_ne!(resp.status, StatusCode::METHOD_NOT_ALLOWED, "{route:?}");
        if resp.status == StatusCode::NOT_FOUND {
            assert_ne!(resp.json()["detail"], "no such route", "{route:?} hit the fallback");
        }
        // Without a token, an authenticated route refuses; the others answer.
        let anon = send(&app, Request::builder().method(route.method).uri(&uri).body(Body::empty()).unwrap()).await;
        assert_eq!(anon.status == StatusCode::UNAUTHORIZED, route.auth, "{route:?}");
        let op = &doc["paths"][route.path][route.method.to_lowercase()];
        assert_eq!(op.get("security").is_some(), route.auth, "{route:?} security");
    }

    // The contract's details: the bearer scheme, the problem schema, the key header, the statuses.
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!((bearer["type"].as_str(), bearer["scheme"].as_str()), (Some("http"), Some("bearer")));
    for schema in ["Problem", "PushBatch", "Mutation", "PushResponse", "PullResponse", "Change"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "schema {schema}");
    }
    let problem = &doc["components"]["schemas"]["Problem"]["properties"];
    for member in ["type", "title", "status", "detail", "code"] {
        assert!(problem[member].is_object(), "problem member {member}");
    }
    let push = &doc["paths"]["/v1/sync/mutations"]["post"];
    let params = push["parameters"].as_array().unwrap();
    assert!(params.iter().any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header" && p["required"] == true));
    let statuses: BTreeSet<&str> = push["responses"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(statuses, BTreeSet::from(["200", "400", "401", "403", "409", "413", "422", "429", "500", "503"]));
    assert!(push["responses"]["200"]["headers"]["Idempotent-Replayed"].is_object());
    assert!(push["responses"]["422"]["content"]["application/problem+json"].is_object());
    let pull = &doc["paths"]["/v1/sync/changes"]["get"];
    assert!(pull["responses"]["410"].is_object());
    for route in ROUTES.iter().filter(|r| r.auth) {
        let op = &doc["paths"][route.path][route.method.to_lowercase()];
        assert!(op["responses"]["403"]["content"]["application/problem+json"].is_object(), "{route:?} documents 403");
    }
    let names: BTreeSet<&str> =
        pull["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, BTreeSet::from(["cursor", "limit"]));
    assert!(pull["parameters"].as_array().unwrap().iter().all(|p| p["in"] == "query"));
    let record = &doc["paths"]["/v1/records/{entity}/{record_id}"]["get"];
    assert!(record["responses"]["200"]["headers"]["ETag"].is_object());
    assert!(record["responses"]["404"].is_object());
}

#[tokio::test]
async fn metrics_count_requests_outcomes_conflicts_and_replays() {
    let fake = Fake::default();
    let app = app(&fake);
    let body = creates(2);
    send(&app, push_req(Some("good"), Some("k1"), &body)).await;
    send(&app, push_req(Some("good"), Some("k1"), &body)).await; // a replay
    let rid = body["mutations"][0]["record_id"].as_str().unwrap().to_owned();
    let mixed = batch(vec![mutation("create", &rid, 0), mutation("update", "missing", 2)]);
    send(&app, push_req(Some("good"), Some("k2"), &mixed)).await;
    send(&app, get("/v1/records/notes/missing", Some("good"))).await;
    send(&app, get("/nowhere", None)).await;

    let r = send(&app, get("/metrics", None)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = r.text();
    for line in [
        r#"converge_http_requests_total{route="/v1/sync/mutations",status="200"} 3"#,
        r#"converge_http_requests_total{route="/v1/records/{entity}/{record_id}",status="404"} 1"#,
        r#"converge_http_requests_total{route="unmatched",status="404"} 1"#,
        r#"converge_mutations_total{outcome="accepted"} 2"#,
        r#"converge_mutations_total{outcome="conflict"} 1"#,
        r#"converge_mutations_total{outcome="rejected"} 1"#,
        r#"converge_conflicts_total{entity="notes"} 1"#,
        "converge_idempotent_replays_total 1",
        r#"converge_http_request_duration_seconds_count{route="/v1/sync/mutations"} 3"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains("# TYPE converge_http_request_duration_seconds histogram"));
    assert!(!text.contains("hello"), "no field values in metrics");
}

#[tokio::test]
async fn traceparent_trace_id_is_recorded_in_the_span() {
    let app = app(&Fake::default());
    // Ids unique to this test: other tests record theirs in the same (process-wide) subscriber.
    let trace = "5af92f3577b34da6a3ce929d0e0e4799";
    let upper = "6BF92F3577B34DA6A3CE929D0E0E4799";
    let mut req = get("/healthz", None);
    req.headers_mut().insert("traceparent", format!("00-{trace}-00f067aa0ba902b7-01").parse().unwrap());
    assert_eq!(send(&app, req).await.status, StatusCode::OK);
    let mut bad = get("/healthz", None);
    bad.headers_mut().insert("traceparent", format!("00-{upper}-00f067aa0ba902b7-01").parse().unwrap());
    assert_eq!(send(&app, bad).await.status, StatusCode::OK);
    let seen = trace_ids();
    assert!(seen.iter().any(|id| id == trace), "{seen:?}");
    assert!(!seen.iter().any(|id| id.eq_ignore_ascii_case(upper)), "{seen:?}");
}
