//! Extractors whose every rejection is a problem+json `HttpError`: the bearer caller, the
//! `Idempotency-Key` header, and JSON body, query and path wrappers.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header;
use axum::http::request::Parts;
use converge_core::wire::validate_idempotency_key;
use converge_core::{Code, Scope};
use serde::de::DeserializeOwned;

use super::AppState;
use super::response::HttpError;
use crate::problem::IDEMPOTENCY_KEY;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub(crate) Scope);

impl FromRequestParts<AppState> for Caller {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| HttpError::new(Code::Unauthorized, "an Authorization: Bearer token is required"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(converge_core::api::bearer_token)
            .ok_or_else(|| HttpError::new(Code::Unauthorized, "the Authorization header is not a Bearer token"))?;
        let scope = state.auth.authenticate(token)?;
        Ok(Caller(scope))
    }
}

/// The `Idempotency-Key` header: present, non-empty, 1-255 printable ASCII characters.
#[derive(Debug, Clone)]
pub(crate) struct IdempotencyKey(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all(IDEMPOTENCY_KEY).iter();
        let Some(value) = values.next() else {
            return Err(HttpError::new(Code::IdempotencyKeyMissing, "the Idempotency-Key header is required"));
        };
        if values.next().is_some() {
            return Err(HttpError::invalid("send one Idempotency-Key header"));
        }
        let key =
            value.to_str().map_err(|_| HttpError::invalid("an Idempotency-Key is 1-255 printable ASCII characters"))?;
        validate_idempotency_key(key)?;
        Ok(IdempotencyKey(key.to_owned()))
    }
}

/// A JSON request body: `Content-Type: application/json`, at most the configured size, parsed
/// strictly (the wire types deny unknown fields).
#[derive(Debug, Clone)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = HttpError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let max = state.limits.max_body_bytes;
        let too_large = || HttpError::new(Code::BodyTooLarge, format!("a request body is at most {max} bytes"));
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(HttpError::invalid("the body must be sent with Content-Type: application/json"));
        }
        let declared =
            req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > max as u64) {
            return Err(too_large());
        }
        let timeout = state.body_timeout;
        let read = tokio::time::timeout(timeout, Bytes::from_request(req, state)).await.map_err(|_| {
            HttpError::invalid(format!("the request body did not arrive within {} s", timeout.as_secs_f64()))
        })?;
        let bytes = read.map_err(|rejection| match rejection {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => too_large(),
            other => HttpError::invalid(format!("the body could not be read: {}", other.body_text())),
        })?;
        let value =
            serde_json::from_slice(&bytes).map_err(|e| HttpError::invalid(format!("invalid JSON body: {e}")))?;
        Ok(JsonBody(value))
    }
}

/// Whether a `Content-Type` is `application/json` (parameters such as `charset` allowed).
fn is_json(value: Option<&axum::http::HeaderValue>) -> bool {
    let Some(essence) = value.and_then(|v| v.to_str().ok()).and_then(|v| v.split(';').next()) else {
        return false;
    };
    essence.trim().eq_ignore_ascii_case("application/json")
}

/// Query parameters; unknown, repeated or malformed ones are a 400 `invalid_request`.
#[derive(Debug, Clone)]
pub(crate) struct ProblemQuery<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ProblemQuery<T> {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Query(value) = Query::<T>::try_from_uri(&parts.uri)
            .map_err(|e| HttpError::invalid(format!("invalid query: {}", e.body_text())))?;
        Ok(ProblemQuery(value))
    }
}

/// Path parameters; a segment that does not decode is a 400 `invalid_request`.
#[derive(Debug, Clone)]
pub(crate) struct ProblemPath<T>(pub(crate) T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ProblemPath<T> {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(value) = Path::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e| HttpError::invalid(format!("invalid path: {}", e.body_text())))?;
        Ok(ProblemPath(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn json_content_types() {
        let ok = |s: &'static str| is_json(Some(&HeaderValue::from_static(s)));
        assert!(ok("application/json"));
        assert!(ok("Application/JSON; charset=utf-8"));
        assert!(!ok("application/merge-patch+json"));
        assert!(!ok("text/plain"));
        assert!(!ok("application/jsonx"));
        assert!(!is_json(None));
    }
}
