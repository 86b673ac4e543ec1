//! This crate's error type, converted to `converge_core::Error` at the `SyncApi` boundary.

use converge_core::ApiError;

/// What can go wrong in the HTTP transport.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is unusable (a base URL that is not http(s), a malformed trace id, a TLS setup
    /// that failed).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The server could not be reached, or the exchange was cut (connect failed, timed out,
    /// connection reset, body cut short).
    #[error("offline: {0}")]
    Offline(String),
    /// The server answered with an error of the wire contract.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The server answered something the client cannot understand.
    #[error("unexpected response: {0}")]
    Protocol(String),
    /// Serving failed (the listener or a connection).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for converge_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Offline(detail) => converge_core::Error::Offline(detail),
            Error::Api(api) => converge_core::Error::Api(api),
            Error::Config(_) | Error::Protocol(_) | Error::Io(_) => converge_core::Error::Fatal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use converge_core::{Code, ErrorClass};

    #[test]
    fn converts_to_the_core_classes() {
        let offline: converge_core::Error = Error::Offline("refused".into()).into();
        assert!(matches!(offline, converge_core::Error::Offline(_)));
        let api: converge_core::Error = Error::Api(ApiError::new(Code::TokenExpired, "old")).into();
        assert_eq!(api.class(), ErrorClass::Unauthorized);
        let fatal: converge_core::Error = Error::Protocol("not json".into()).into();
        assert_eq!(fatal.class(), ErrorClass::Fatal);
    }
}
