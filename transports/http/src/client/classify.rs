//! Sorting the client's failures into the engine's classes: transport failures are offline, a
//! problem+json body is an API error with its code, statuses without one fall back by status.

use std::time::Duration;

use converge_core::{ApiError, Code};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::error::Error;

/// A 2xx answer, read whole.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

/// A failure before a whole answer arrived.
pub(crate) fn transport(e: reqwest::Error) -> Error {
    if e.is_builder() {
        return Error::Config(chain(&e));
    }
    if e.is_redirect() {
        return Error::Protocol(chain(&e));
    }
    // Connect refused or timed out, request timeout, connection reset, body cut short: the
    // server may come back, so all of these are "offline" for the sync worker.
    Error::Offline { detail: "the server could not be reached".into(), source: Some(e.into()) }
}

/// An error with its sources, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The error for a non-2xx answer.
pub(crate) fn error_response(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Error {
    let retry_after = retry_after(headers);
    let problem = crate::problem::read(body);
    let detail = problem
        .as_ref()
        .and_then(|(_, detail)| detail.clone())
        .unwrap_or_else(|| format!("HTTP {} without a problem body", status.as_u16()));
    let code = problem.as_ref().and_then(|(code, _)| Code::parse(code)).or_else(|| fallback_code(status));
    match code {
        Some(code) => Error::Api(ApiError { code, detail, retry_after }),
        None => Error::Protocol(format!("unexpected HTTP {}: {detail}", status.as_u16())),
    }
}

/// The code of an answer without a (known) problem code, where the status alone says enough.
fn fallback_code(status: StatusCode) -> Option<Code> {
    match status.as_u16() {
        502..=504 => Some(Code::Unavailable),
        500..=599 => Some(Code::Internal),
        401 => Some(Code::Unauthorized),
        429 => Some(Code::RateLimited),
        _ => None,
    }
}

/// `Retry-After` in seconds (the form the contract uses); absent or another form gives `None`.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn api(status: u16, headers: &HeaderMap, body: &str) -> ApiError {
        match error_response(StatusCode::from_u16(status).unwrap(), headers, body.as_bytes()) {
            Error::Api(e) => e,
            other => panic!("expected an API error, got {other:?}"),
        }
    }

    #[test]
    fn problems_statuses_and_retry_after() {
        let none = HeaderMap::new();
        let e = api(
            422,
            &none,
            r#"{"type":"x","title":"t","status":422,"detail":"other body","code":"idempotency_key_reused"}"#,
        );
        assert_eq!((e.code, e.detail.as_str(), e.retry_after), (Code::IdempotencyKeyReused, "other body", None));

        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(api(503, &h, "").code, Code::Unavailable);
        assert_eq!(api(503, &h, "").retry_after, Some(Duration::from_secs(7)));
        assert_eq!(api(502, &none, "<html>").code, Code::Unavailable);
        assert_eq!(api(500, &none, "").code, Code::Internal);
        assert_eq!(api(401, &none, "").code, Code::Unauthorized);
        assert_eq!(api(429, &h, "").retry_after, Some(Duration::from_secs(7)));
        // An unknown code in a problem body falls back on the status.
        assert_eq!(api(503, &none, r#"{"code":"brand_new"}"#).code, Code::Unavailable);

        let mut date = HeaderMap::new();
        date.insert(RETRY_AFTER, HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(api(503, &date, "").retry_after, None);

        assert!(matches!(error_response(StatusCode::NOT_FOUND, &none, b"nope"), Error::Protocol(_)));
        assert!(matches!(error_response(StatusCode::BAD_REQUEST, &none, br#"{"code":"what"}"#), Error::Protocol(_)));
    }
}
