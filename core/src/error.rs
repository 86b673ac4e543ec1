//! Errors of the core crate, classified so the sync worker knows whether to retry, refresh, or stop.

use std::time::Duration;

/// A stable error code, as it appears in the wire contract's problem+json `code` member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// The request's shape is wrong (type, unknown field, bad value).
    InvalidRequest,
    /// Missing or invalid bearer token.
    Unauthorized,
    /// The bearer token has expired.
    TokenExpired,
    /// The token's scopes do not allow this: a route needing `sync:read` or `sync:write`, or (per
    /// op, and for a record) an entity outside the token's list.
    Forbidden,
    /// A push without an `Idempotency-Key`.
    IdempotencyKeyMissing,
    /// The `Idempotency-Key` was used before with another body.
    IdempotencyKeyReused,
    /// A request with the same `Idempotency-Key` is still running.
    IdempotencyKeyInFlight,
    /// More mutations in one batch than the server allows.
    BatchTooLarge,
    /// A request body over the server's limit.
    BodyTooLarge,
    /// A record's fields over the server's limit after the patch (per op).
    RecordTooLarge,
    /// The mutation's check mode is weaker than the server pins for its entity (per op).
    CheckModeTooWeak,
    /// The record (or route) does not exist in the caller's tenant.
    NotFound,
    /// The pull cursor is older than the server's retention horizon.
    CursorExpired,
    /// Too many requests; retry after the given delay.
    RateLimited,
    /// The server cannot serve now; retry after the given delay.
    Unavailable,
    /// A server-side failure that is not the client's fault.
    Internal,
}

impl Code {
    /// The code as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidRequest => "invalid_request",
            Code::Unauthorized => "unauthorized",
            Code::TokenExpired => "token_expired",
            Code::Forbidden => "forbidden",
            Code::IdempotencyKeyMissing => "idempotency_key_missing",
            Code::IdempotencyKeyReused => "idempotency_key_reused",
            Code::IdempotencyKeyInFlight => "idempotency_key_in_flight",
            Code::BatchTooLarge => "batch_too_large",
            Code::BodyTooLarge => "body_too_large",
            Code::RecordTooLarge => "record_too_large",
            Code::CheckModeTooWeak => "check_mode_too_weak",
            Code::NotFound => "not_found",
            Code::CursorExpired => "cursor_expired",
            Code::RateLimited => "rate_limited",
            Code::Unavailable => "unavailable",
            Code::Internal => "internal",
        }
    }

    /// Parses a wire code; unknown codes give `None`.
    pub fn parse(s: &str) -> Option<Code> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).ok()
    }

    /// The HTTP status the wire contract gives this code.
    pub fn http_status(self) -> u16 {
        match self {
            Code::InvalidRequest | Code::IdempotencyKeyMissing => 400,
            Code::Unauthorized | Code::TokenExpired => 401,
            Code::Forbidden => 403,
            Code::NotFound => 404,
            Code::IdempotencyKeyInFlight => 409,
            Code::CursorExpired => 410,
            Code::BatchTooLarge | Code::BodyTooLarge => 413,
            Code::IdempotencyKeyReused | Code::RecordTooLarge | Code::CheckModeTooWeak => 422,
            Code::RateLimited => 429,
            Code::Unavailable => 503,
            Code::Internal => 500,
        }
    }

    /// How a client should treat this code.
    pub fn class(self) -> ErrorClass {
        match self {
            Code::Unauthorized | Code::TokenExpired => ErrorClass::Unauthorized,
            Code::IdempotencyKeyInFlight | Code::RateLimited | Code::Unavailable | Code::Internal => {
                ErrorClass::Retryable
            }
            _ => ErrorClass::Rejected,
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The detail a client sees for a server-side failure ([`Error::into_answer`]).
pub const INTERNAL_DETAIL: &str = "the server failed to handle the request";

/// What the sync worker should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Try again later (offline, busy, rate limited, a passing server failure).
    Retryable,
    /// Get a fresh token, then resume.
    Unauthorized,
    /// The request itself is wrong; sending it again gives the same answer.
    Rejected,
    /// Something is broken on this side (corrupt store, bug); stop and report.
    Fatal,
}

/// An error answered by the sync API (local or remote), with its stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct ApiError {
    /// The stable code.
    pub code: Code,
    /// A human-readable explanation; never contains record contents.
    pub detail: String,
    /// When the caller may retry, for `rate_limited` and `unavailable`.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// An error with a code and a detail.
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        ApiError { code, detail: detail.into(), retry_after: None }
    }

    /// Shorthand for `invalid_request`.
    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(Code::InvalidRequest, detail)
    }

    /// Adds a retry delay.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }
}

/// An error kept as the cause of another (a driver's, a transport's).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The core error type. Each variant keeps the error that caused it, when there is one
/// (`std::error::Error::source`), and its `Display` says only its own part: [`Error::report`]
/// joins the chain.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The sync API answered with an error.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The server could not be reached (connect failed, timed out, connection cut).
    #[error("offline: {detail}")]
    Offline {
        /// What failed.
        detail: String,
        /// The transport's error.
        #[source]
        source: Option<BoxError>,
    },
    /// The local store failed.
    #[error("local store: {detail}")]
    Store {
        /// What failed.
        detail: String,
        /// Whether trying again may succeed (busy, locked).
        retryable: bool,
        /// The driver's error.
        #[source]
        source: Option<BoxError>,
    },
    /// The device's disk (or the store's quota) is full; the write changed nothing. Retrying
    /// works once there is room.
    #[error("the device store is full: {0}")]
    StoreFull(String),
    /// The caller passed something the engine cannot accept.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The record does not exist locally.
    #[error("no such record: {entity}/{record_id}")]
    NotFound {
        /// The entity.
        entity: String,
        /// The record id.
        record_id: String,
    },
    /// The server does not offer this (live change notices on a server that predates them): the
    /// caller falls back (the sync worker polls).
    #[error("not offered by the server: {0}")]
    Unsupported(String),
    /// An answer the client cannot understand, a setting it cannot use, or a broken invariant.
    #[error("fatal: {detail}")]
    Fatal {
        /// What is broken.
        detail: String,
        /// The error behind it.
        #[source]
        source: Option<BoxError>,
    },
}

/// Where an error arose, for the status to say what a user can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The sync API answered (the error has its code).
    Server,
    /// The server could not be reached.
    Network,
    /// The device's store failed (busy, I/O, corrupt).
    Store,
    /// The device's disk or the store's quota is full.
    StoreFull,
    /// The app passed something the engine cannot accept.
    Input,
    /// Something on this side is broken (an answer not understood, a broken invariant).
    Engine,
}

impl Error {
    /// How the sync worker should treat this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Api(e) => e.code.class(),
            Error::Offline { .. } => ErrorClass::Retryable,
            Error::Store { retryable: true, .. } | Error::StoreFull(_) => ErrorClass::Retryable,
            Error::Store { .. } | Error::Fatal { .. } => ErrorClass::Fatal,
            Error::InvalidInput(_) | Error::NotFound { .. } | Error::Unsupported(_) => ErrorClass::Rejected,
        }
    }

    /// Where the error arose.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Api(_) | Error::Unsupported(_) => ErrorKind::Server,
            Error::Offline { .. } => ErrorKind::Network,
            Error::Store { .. } => ErrorKind::Store,
            Error::StoreFull(_) => ErrorKind::StoreFull,
            Error::InvalidInput(_) | Error::NotFound { .. } => ErrorKind::Input,
            Error::Fatal { .. } => ErrorKind::Engine,
        }
    }

    /// The API code, if the error came from the sync API.
    pub fn code(&self) -> Option<Code> {
        match self {
            Error::Api(e) => Some(e.code),
            _ => None,
        }
    }

    /// The server could not be reached.
    pub fn offline(detail: impl Into<String>) -> Self {
        Error::Offline { detail: detail.into(), source: None }
    }

    /// The server could not be reached, because of `source`.
    pub fn offline_from(detail: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Offline { detail: detail.into(), source: Some(source.into()) }
    }

    /// A store error that should not be retried.
    pub fn store(detail: impl Into<String>) -> Self {
        Error::Store { detail: detail.into(), retryable: false, source: None }
    }

    /// A store error caused by `source`, retryable or not.
    pub fn store_from(detail: impl Into<String>, retryable: bool, source: impl Into<BoxError>) -> Self {
        Error::Store { detail: detail.into(), retryable, source: Some(source.into()) }
    }

    /// Something on this side is broken.
    pub fn fatal(detail: impl Into<String>) -> Self {
        Error::Fatal { detail: detail.into(), source: None }
    }

    /// Something on this side is broken, because of `source`.
    pub fn fatal_from(detail: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Fatal { detail: detail.into(), source: Some(source.into()) }
    }

    /// What a server answers a client for this error, on any transport: an API error keeps its
    /// code; bad input is `invalid_request`; a full store is `unavailable` with a retry delay;
    /// any other failure is `internal` with a fixed detail, the real one only in the log.
    pub fn into_answer(self) -> ApiError {
        match self {
            Error::Api(api) if api.code == Code::Internal => {
                tracing::error!(detail = %api.detail, "internal error");
                ApiError { detail: INTERNAL_DETAIL.to_owned(), ..api }
            }
            Error::Api(api) => api,
            Error::InvalidInput(detail) => ApiError::invalid(detail),
            Error::NotFound { .. } => ApiError::new(Code::NotFound, "no such record"),
            Error::StoreFull(_) => ApiError::new(Code::Unavailable, "the server's storage is full; try again later")
                .with_retry_after(Duration::from_secs(60)),
            other => {
                tracing::error!(error = %other.report(), "internal error");
                ApiError::new(Code::Internal, INTERNAL_DETAIL)
            }
        }
    }

    /// The error and its causes, `a: b: c`, each said once.
    pub fn report(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            let part = s.to_string();
            if !out.ends_with(&part) {
                out.push_str(": ");
                out.push_str(&part);
            }
            source = s.source();
        }
        out
    }
}

/// The core result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_classify() {
        for code in [Code::InvalidRequest, Code::IdempotencyKeyInFlight, Code::TokenExpired, Code::CursorExpired] {
            assert_eq!(Code::parse(code.as_str()), Some(code));
        }
        assert_eq!(Code::parse("nope"), None);
        assert_eq!(Code::RateLimited.class(), ErrorClass::Retryable);
        assert_eq!(Code::TokenExpired.class(), ErrorClass::Unauthorized);
        assert_eq!(Code::NotFound.class(), ErrorClass::Rejected);
        assert_eq!(Code::BodyTooLarge.http_status(), 413);
        assert_eq!(Error::offline("x").class(), ErrorClass::Retryable);
    }

    #[test]
    fn errors_keep_their_cause_and_say_where_they_arose() {
        let io = std::io::Error::other("connection reset by peer");
        let e = Error::offline_from("the push was cut", io);
        assert_eq!(e.kind(), ErrorKind::Network);
        assert_eq!(std::error::Error::source(&e).unwrap().to_string(), "connection reset by peer");
        assert_eq!(e.report(), "offline: the push was cut: connection reset by peer");
        let busy = Error::store_from("database is locked", true, std::io::Error::other("database is locked"));
        assert_eq!((busy.class(), busy.kind()), (ErrorClass::Retryable, ErrorKind::Store));
        assert_eq!(busy.report(), "local store: database is locked", "a cause saying the same is said once");
        assert_eq!(Error::StoreFull("disk".into()).kind(), ErrorKind::StoreFull);
        assert_eq!(Error::fatal("x").class(), ErrorClass::Fatal);
    }
}
