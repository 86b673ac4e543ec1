//! The route handlers, each documented for the OpenAPI document with `#[utoipa::path]`.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use converge_core::Code;
use converge_core::wire::{Change, PullRequest, PullResponse, PushBatch, PushRequest, PushResponse};
use serde::Serialize;

use super::extract::{Caller, IdempotencyKey, JsonBody, ProblemPath, ProblemQuery};
use super::response::{HttpError, json};
use super::{AppState, CHANGES_PATH, HEALTHZ_PATH, METRICS_PATH, OPENAPI_PATH, PUSH_PATH, RECORD_PATH};
use crate::problem::{IDEMPOTENT_REPLAYED, Problem};

/// The media type of `/metrics`.
pub(crate) const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The body of `/healthz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Health {
    /// Always `ok` when the server answers.
    #[schema(example = "ok")]
    status: String,
}

/// Applies a batch of mutations, at most once per op id.
#[utoipa::path(
    post,
    path = PUSH_PATH,
    tag = "sync",
    operation_id = "push",
    security(("bearer" = [])),
    params(
        ("Idempotency-Key" = String, Header, min_length = 1, max_length = 255, pattern = "^[\\x20-\\x7E]+$",
            description = "Names the batch: 1-255 printable ASCII characters. The same key and body replay the stored response."),
    ),
    request_body(content = PushBatch, content_type = "application/json"),
    responses(
        (status = 200, description = "Per-op outcomes; each op id is in exactly one list", body = PushResponse,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored response of an earlier request with the same key"))),
        (status = 400, description = "`invalid_request` (shape, unknown field, bad key) or `idempotency_key_missing`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized` or `token_expired`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token's scope does not cover this route (or, for a record, its entity type)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`idempotency_key_in_flight`: a request with this key is still running", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "`batch_too_large` or `body_too_large`", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "`idempotency_key_reused`: the key was used with another body", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "`internal`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ),
)]
pub(crate) async fn push(
    State(state): State<AppState>,
    Caller(scope): Caller,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    JsonBody(batch): JsonBody<PushBatch>,
) -> Result<Response, HttpError> {
    batch.validate(&state.limits)?;
    tracing::debug!(tenant = %scope.tenant, device_id = %batch.device_id, mutations = batch.mutations.len(), "push");
    let resp = state.tenancy.scoped(scope).push(PushRequest { idempotency_key, batch }).await?;
    state.metrics.observe_push(&resp);
    let mut out = json(StatusCode::OK, &resp)?;
    if resp.replayed {
        out.headers_mut().insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(out)
}

/// Returns the next page of the change feed.
#[utoipa::path(
    get,
    path = CHANGES_PATH,
    tag = "sync",
    operation_id = "pull",
    security(("bearer" = [])),
    params(
        ("cursor" = Option<String>, Query, description = "Where the last page ended; absent to start from the beginning"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size; default 500, at most 1000"),
    ),
    responses(
        (status = 200, description = "A page of changes, latest state per record, in change order", body = PullResponse),
        (status = 400, description = "`invalid_request` (unknown or malformed parameter)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized` or `token_expired`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token's scope does not cover this route (or, for a record, its entity type)", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "`cursor_expired`: the cursor is older than the retention horizon", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "`internal`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ),
)]
pub(crate) async fn changes(
    State(state): State<AppState>,
    Caller(scope): Caller,
    ProblemQuery(mut req): ProblemQuery<PullRequest>,
) -> Result<Response, HttpError> {
    if req.cursor.as_deref() == Some("") {
        req.cursor = None;
    }
    let page = state.tenancy.scoped(scope).pull(req).await?;
    tracing::debug!(changes = page.changes.len(), has_more = page.has_more, "pull");
    json(StatusCode::OK, &page)
}

/// Returns one record's current state (also when deleted), with its version as the ETag.
#[utoipa::path(
    get,
    path = RECORD_PATH,
    tag = "sync",
    operation_id = "record",
    security(("bearer" = [])),
    params(
        ("entity" = String, Path, description = "The entity type, e.g. `notes`"),
        ("record_id" = String, Path, description = "The record id"),
    ),
    responses(
        (status = 200, description = "The record", body = Change,
            headers(("ETag" = String, description = "The record's version, quoted: `\"12\"`"))),
        (status = 400, description = "`invalid_request`", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized` or `token_expired`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token's scope does not cover this route (or, for a record, its entity type)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "`not_found`: no such record in the caller's tenant", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "`rate_limited`", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 500, description = "`internal`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ),
)]
pub(crate) async fn record(
    State(state): State<AppState>,
    Caller(scope): Caller,
    ProblemPath((entity, record_id)): ProblemPath<(String, String)>,
) -> Result<Response, HttpError> {
    let change = state.tenancy.scoped(scope).record(&entity, &record_id).await?;
    let mut out = json(StatusCode::OK, &change)?;
    let etag = HeaderValue::try_from(format!("\"{}\"", change.version)).map_err(|e| HttpError::internal(&e))?;
    out.headers_mut().insert(header::ETAG, etag);
    Ok(out)
}

/// Liveness: answers while the server runs. No auth.
#[utoipa::path(
    get,
    path = HEALTHZ_PATH,
    tag = "ops",
    operation_id = "healthz",
    responses((status = 200, description = "The server is up", body = Health)),
)]
pub(crate) async fn healthz() -> Result<Response, HttpError> {
    json(StatusCode::OK, &Health { status: "ok".to_owned() })
}

/// Server figures in the Prometheus text format. No auth.
#[utoipa::path(
    get,
    path = METRICS_PATH,
    tag = "ops",
    operation_id = "metrics",
    responses(
        (status = 200, description = "Requests, latency, mutations by outcome, conflicts by entity, replays", body = String,
            content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
        (status = 500, description = "`internal`", body = Problem, content_type = "application/problem+json"),
    ),
)]
pub(crate) async fn metrics(State(state): State<AppState>) -> Result<Response, HttpError> {
    let text = state.metrics.encode().map_err(|e| HttpError::internal(&e))?;
    Ok(([(header::CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE))], text).into_response())
}

/// This document. No auth.
#[utoipa::path(
    get,
    path = OPENAPI_PATH,
    tag = "ops",
    operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document of the wire contract", body = Object)),
)]
pub(crate) async fn openapi_json(State(state): State<AppState>) -> Response {
    let body = state.openapi_json.to_string();
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// Any path the router does not serve.
pub(crate) async fn not_found() -> HttpError {
    HttpError::new(Code::NotFound, "no such route")
}

/// A served path with another method.
pub(crate) async fn method_not_allowed() -> HttpError {
    HttpError::invalid("this method is not allowed on this route").with_status(StatusCode::METHOD_NOT_ALLOWED)
}
