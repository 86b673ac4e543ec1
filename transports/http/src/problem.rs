//! The problem+json body (RFC 9457) that every error of the wire contract carries — its shape,
//! how it is made and how a client reads it — and the header names both adapters use. (Which
//! status and log line an error gets is the server's `response.rs`; which error class an answer
//! means is the client's `classify.rs`.)

use converge_core::Code;
use serde::{Deserialize, Serialize};

/// The media type of an error body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";
/// The media type of every other body.
pub const JSON_CONTENT_TYPE: &str = "application/json";
/// Where a problem's `type` URI starts; the code follows.
pub const PROBLEM_TYPE_BASE: &str = "https://converge.dev/problems/";
/// The request header that names a push batch.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// The response header set (to `true`) on a replayed push response.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// The W3C trace context request header.
pub const TRACEPARENT: &str = "traceparent";

/// An error body: `{"type", "title", "status", "detail", "code"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Problem {
    /// `https://converge.dev/problems/<code>`.
    #[serde(rename = "type")]
    #[cfg_attr(feature = "server", schema(example = "https://converge.dev/problems/invalid_request"))]
    pub type_uri: String,
    /// A short summary of the code, the same for every occurrence.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong this time; never record contents.
    pub detail: String,
    /// The stable code, e.g. `invalid_request`, `unauthorized`, `idempotency_key_reused`.
    #[cfg_attr(feature = "server", schema(example = "invalid_request"))]
    pub code: String,
}

impl Problem {
    /// A problem with the status the contract gives `code`.
    pub fn new(code: Code, detail: impl Into<String>) -> Problem {
        Problem::with_status(code, code.http_status(), detail)
    }

    /// A problem with an explicit status (405 carries `invalid_request`).
    pub fn with_status(code: Code, status: u16, detail: impl Into<String>) -> Problem {
        Problem {
            type_uri: format!("{PROBLEM_TYPE_BASE}{code}"),
            title: title(code).to_owned(),
            status,
            detail: detail.into(),
            code: code.as_str().to_owned(),
        }
    }
}

/// What a client reads of a problem body: the code as written (possibly one this build does not
/// know) and the detail (else the title). Lenient: other members, and members missing but
/// `code`, are fine; a body that is not a problem gives `None`.
pub fn read(body: &[u8]) -> Option<(String, Option<String>)> {
    #[derive(Deserialize)]
    struct Read {
        code: String,
        #[serde(default)]
        detail: Option<String>,
        #[serde(default)]
        title: Option<String>,
    }
    let p: Read = serde_json::from_slice(body).ok()?;
    Some((p.code, p.detail.or(p.title)))
}

/// The problem title of a code.
pub fn title(code: Code) -> &'static str {
    match code {
        Code::InvalidRequest => "Invalid request",
        Code::Unauthorized => "Unauthorized",
        Code::TokenExpired => "Token expired",
        Code::Forbidden => "Forbidden",
        Code::IdempotencyKeyMissing => "Idempotency-Key missing",
        Code::IdempotencyKeyReused => "Idempotency-Key reused with another body",
        Code::IdempotencyKeyInFlight => "Idempotency-Key in flight",
        Code::BatchTooLarge => "Batch too large",
        Code::BodyTooLarge => "Body too large",
        Code::RecordTooLarge => "Record too large",
        Code::CheckModeTooWeak => "Check mode too weak",
        Code::NotFound => "Not found",
        Code::CursorExpired => "Cursor expired",
        Code::RateLimited => "Rate limited",
        Code::Unavailable => "Unavailable",
        Code::Internal => "Internal error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_shape_follows_the_contract() {
        let p = Problem::new(Code::BodyTooLarge, "too big");
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["type"], "https://converge.dev/problems/body_too_large");
        assert_eq!(v["status"], 413);
        assert_eq!(v["code"], "body_too_large");
        assert_eq!(v["title"], "Body too large");
        assert_eq!(v.as_object().unwrap().len(), 5);
        let back: Problem = serde_json::from_value(v).unwrap();
        assert_eq!(back, p);
    }
}
