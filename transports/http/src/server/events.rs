//! `GET /v1/sync/events`: live change notices as server-sent events.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use converge_core::wire::parse_cursor;
use serde::Deserialize;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::AppState;
use super::EVENTS_PATH;
use super::extract::{Caller, ProblemQuery};
use super::response::HttpError;
use crate::problem::Problem;

/// A comment line this often keeps proxies from closing a quiet stream.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// The SSE event name of a notice.
pub const NOTICE_EVENT: &str = "changes";

/// The query of the events route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    cursor: Option<String>,
}

/// Opens a stream of change notices: one (coalesced, at most one per 50 ms) whenever the feed
/// holds changes after the cursor. A notice carries no records; pull the feed as usual.
#[utoipa::path(
    get,
    path = EVENTS_PATH,
    tag = "sync",
    operation_id = "events",
    security(("bearer" = [])),
    params(
        ("cursor" = Option<String>, Query, description = "The client's feed position; absent for the start"),
        ("Last-Event-ID" = Option<String>, Header, description = "If sent, stands for `cursor` (an EventSource reconnecting)"),
    ),
    responses(
        (status = 200, description = "`text/event-stream`: `id: <cursor>`, `event: changes`, `data: {\"cursor\": \"<cursor>\"}` per notice; `: keepalive` every 15 s",
            body = String, content_type = "text/event-stream"),
        (status = 400, description = "`invalid_request` (unknown or malformed parameter, a cursor this server never gave out)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "`unauthorized` or `token_expired`", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`forbidden`: the token's scope does not cover this route (or, for a record, its entity type)", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "`cursor_expired`: the cursor is older than the retention horizon", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "`internal`", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "`unavailable`", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ),
)]
pub(crate) async fn events(
    State(state): State<AppState>,
    Caller(scope): Caller,
    headers: HeaderMap,
    ProblemQuery(query): ProblemQuery<EventsQuery>,
) -> Result<Response, HttpError> {
    let last_event_id = match headers.get("last-event-id") {
        Some(v) => Some(v.to_str().map_err(|_| HttpError::invalid("Last-Event-ID is not a cursor"))?.to_owned()),
        None => None,
    };
    // An empty value is the same as none, for either; the header wins, but a query cursor sent
    // beside it must still be one.
    let query_cursor = query.cursor.filter(|c| !c.is_empty());
    if query_cursor.as_deref().is_some_and(|c| parse_cursor(c).is_none()) {
        return Err(HttpError::invalid("the cursor is not one this server gave out"));
    }
    let cursor = last_event_id.filter(|c| !c.is_empty()).or(query_cursor);
    let subscription = state.tenancy.scoped(scope).subscribe(cursor).await?;
    // A failure after the stream opened ends it; the client reconnects with its cursor.
    let stream = ReceiverStream::new(subscription.into_receiver()).map_while(|notice| {
        let notice = notice.ok()?;
        let data = serde_json::to_string(&notice).ok()?;
        Some(Ok::<_, Infallible>(Event::default().id(notice.cursor).event(NOTICE_EVENT).data(data)))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEPALIVE).text("keepalive")).into_response())
}
