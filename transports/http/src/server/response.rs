//! The one HTTP error type of the server adapter: every failure becomes a problem+json response
//! here, and this is the only place that decides the status and what gets logged.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use converge_core::{ApiError, Code};
use serde::Serialize;

use crate::problem::{JSON_CONTENT_TYPE, PROBLEM_CONTENT_TYPE, Problem};

use converge_core::error::INTERNAL_DETAIL;

/// An error answer: a status, a stable code and a detail for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpError {
    status: StatusCode,
    code: Code,
    detail: String,
    retry_after: Option<Duration>,
}

impl HttpError {
    /// An error with the status the contract gives `code`.
    pub(crate) fn new(code: Code, detail: impl Into<String>) -> HttpError {
        let status = StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        HttpError { status, code, detail: detail.into(), retry_after: None }
    }

    /// Shorthand for a 400 `invalid_request`.
    pub(crate) fn invalid(detail: impl Into<String>) -> HttpError {
        HttpError::new(Code::InvalidRequest, detail)
    }

    /// Overrides the status (a 405 carries `invalid_request`).
    pub(crate) fn with_status(mut self, status: StatusCode) -> HttpError {
        self.status = status;
        self
    }

    /// A 500 `internal`; `cause` is logged, never sent.
    pub(crate) fn internal(cause: &dyn std::fmt::Display) -> HttpError {
        tracing::error!(error = %cause, "internal error");
        HttpError::new(Code::Internal, INTERNAL_DETAIL)
    }
}

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> HttpError {
        converge_core::Error::Api(e).into()
    }
}

impl From<converge_core::Error> for HttpError {
    fn from(e: converge_core::Error) -> HttpError {
        let api = e.into_answer();
        HttpError { retry_after: api.retry_after, ..HttpError::new(api.code, api.detail) }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), code = %self.code, "request failed");
        } else {
            tracing::debug!(status = self.status.as_u16(), code = %self.code, "request refused");
        }
        let problem = Problem::with_status(self.code, self.status.as_u16(), self.detail);
        let body = match serde_json::to_vec(&problem) {
            Ok(body) => body,
            Err(_) => br#"{"code":"internal"}"#.to_vec(),
        };
        let mut resp = (self.status, [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE))], body)
            .into_response();
        if let Some(after) = self.retry_after {
            // Whole seconds, rounded up, so a client never retries early.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.code == Code::BodyTooLarge {
            // The body was left unread, so the server closes the connection: say so, or a client
            // sends its next request on it and sees the connection cut.
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// A 2xx (or any) JSON answer serialized with `serde_json::to_vec`, so the same value always
/// gives the same bytes.
pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Result<Response, HttpError> {
    let body = serde_json::to_vec(value).map_err(|e| HttpError::internal(&e))?;
    Ok((status, [(header::CONTENT_TYPE, HeaderValue::from_static(JSON_CONTENT_TYPE))], body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_errors_map_to_statuses_and_codes() {
        let e = HttpError::from(converge_core::Error::store("disk I/O error on notes/123"));
        assert_eq!((e.status, e.code), (StatusCode::INTERNAL_SERVER_ERROR, Code::Internal));
        assert!(!e.detail.contains("notes"), "the store detail must not reach the client");

        let e = HttpError::from(converge_core::Error::offline("db down"));
        assert_eq!(e.code, Code::Internal);

        let e = HttpError::from(converge_core::Error::StoreFull("database or disk is full".into()));
        assert_eq!(
            (e.status, e.code, e.retry_after),
            (StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable, Some(Duration::from_secs(60)))
        );

        let api = ApiError::new(Code::Unavailable, "draining").with_retry_after(Duration::from_millis(1500));
        let resp = HttpError::from(converge_core::Error::Api(api)).into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
        assert_eq!(resp.headers()[header::CONTENT_TYPE], PROBLEM_CONTENT_TYPE);

        let e = HttpError::from(converge_core::Error::InvalidInput("bad".into()));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = HttpError::from(ApiError::new(Code::Internal, "secret path /var/db"));
        assert_eq!(e.detail, INTERNAL_DETAIL);
    }
}
