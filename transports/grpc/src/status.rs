//! The contract's errors as gRPC statuses and back: the status code the design gives each code,
//! `google.rpc.ErrorInfo` (domain `converge.dev`, reason = the code) and `google.rpc.RetryInfo`
//! where HTTP sends `Retry-After`.

use std::collections::HashMap;
use std::time::Duration;

use converge_core::{ApiError, Code};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every Converge error.
pub const DOMAIN: &str = "converge.dev";

/// The gRPC status code of a contract code.
pub fn grpc_code(code: Code) -> tonic::Code {
    match code {
        Code::InvalidRequest | Code::IdempotencyKeyMissing => tonic::Code::InvalidArgument,
        Code::Unauthorized | Code::TokenExpired => tonic::Code::Unauthenticated,
        Code::Forbidden => tonic::Code::PermissionDenied,
        Code::NotFound => tonic::Code::NotFound,
        Code::IdempotencyKeyReused | Code::CursorExpired => tonic::Code::FailedPrecondition,
        Code::IdempotencyKeyInFlight => tonic::Code::Aborted,
        Code::BatchTooLarge | Code::BodyTooLarge | Code::RateLimited => tonic::Code::ResourceExhausted,
        Code::Unavailable => tonic::Code::Unavailable,
        Code::Internal => tonic::Code::Internal,
        // Per-op codes, never a whole call's; placed as HTTP places them (422).
        Code::RecordTooLarge | Code::CheckModeTooWeak => tonic::Code::FailedPrecondition,
    }
}

/// The status for an API error. A retry delay is sent in whole seconds, rounded up, as HTTP's
/// `Retry-After` is, so both wires give the same answer.
pub fn to_status(e: &ApiError) -> tonic::Status {
    let mut details = ErrorDetails::new();
    details.set_error_info(e.code.as_str(), DOMAIN, HashMap::new());
    if let Some(after) = e.retry_after {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        details.set_retry_info(Some(Duration::from_secs(secs)));
    }
    tonic::Status::with_error_details(grpc_code(e.code), e.detail.clone(), details)
}

/// The API error a status carries: the code from its `ErrorInfo` (domain `converge.dev`) and
/// the delay from its `RetryInfo`; `None` for a status without Converge's details (tonic's own,
/// for a failed connection, or a proxy's).
pub fn from_status(status: &tonic::Status) -> Option<ApiError> {
    let details = status.get_error_details();
    let retry_after = details.retry_info().and_then(|r| r.retry_delay);
    let code = details.error_info().filter(|info| info.domain == DOMAIN).and_then(|info| Code::parse(&info.reason))?;
    Some(ApiError { code, detail: status.message().to_owned(), retry_after })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_with_its_retry_delay() {
        let all = [
            Code::InvalidRequest,
            Code::Unauthorized,
            Code::TokenExpired,
            Code::Forbidden,
            Code::IdempotencyKeyMissing,
            Code::IdempotencyKeyReused,
            Code::IdempotencyKeyInFlight,
            Code::BatchTooLarge,
            Code::BodyTooLarge,
            Code::NotFound,
            Code::CursorExpired,
            Code::RateLimited,
            Code::Unavailable,
            Code::Internal,
        ];
        for code in all {
            let e = ApiError::new(code, "why").with_retry_after(Duration::from_millis(1500));
            let status = to_status(&e);
            let back = from_status(&status).unwrap();
            assert_eq!((back.code, back.detail.as_str()), (code, "why"));
            assert_eq!(back.retry_after, Some(Duration::from_secs(2)), "rounded up like Retry-After");
        }
        assert_eq!(grpc_code(Code::IdempotencyKeyInFlight), tonic::Code::Aborted);
        assert_eq!(grpc_code(Code::Forbidden), tonic::Code::PermissionDenied);
        assert_eq!(grpc_code(Code::CursorExpired), tonic::Code::FailedPrecondition);
    }

    #[test]
    fn statuses_without_converge_details_carry_no_api_error() {
        assert!(from_status(&tonic::Status::unavailable("down")).is_none());
        assert!(from_status(&tonic::Status::invalid_argument("?")).is_none());
        let foreign = tonic::Status::with_error_details(
            tonic::Code::NotFound,
            "x",
            ErrorDetails::with_error_info("not_found", "other.example", HashMap::new()),
        );
        assert!(from_status(&foreign).is_none(), "another domain's reason is not ours");
    }
}
