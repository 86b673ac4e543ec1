//! This crate's error type, converted to `converge_core::Error` at the `SyncApi` boundary.

use converge_core::ApiError;

/// What can go wrong in the gRPC transport.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is unusable (a URL that is not grpc(s), a malformed trace id, a TLS setup that
    /// failed).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The server could not be reached, or the exchange was cut (connect failed, timed out,
    /// connection reset, stream cut short).
    #[error("offline: {detail}")]
    Offline {
        /// What failed.
        detail: String,
        /// The transport's error.
        #[source]
        source: Option<converge_core::BoxError>,
    },
    /// The app's auth provider gave no token; its error keeps its class.
    #[error("the auth provider gave no token")]
    Auth(#[source] converge_core::Error),
    /// The server answered with an error of the wire contract.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The server does not offer this (a server without `Subscribe`).
    #[error("not offered by the server: {0}")]
    Unsupported(String),
    /// The server answered something the client cannot understand.
    #[error("unexpected response: {0}")]
    Protocol(String),
    /// Serving failed (the listener or a connection).
    #[error("serving failed")]
    Serve(#[source] converge_core::BoxError),
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for converge_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Offline { detail, source } => converge_core::Error::Offline { detail, source },
            Error::Api(api) => converge_core::Error::Api(api),
            Error::Auth(cause) if cause.class() == converge_core::ErrorClass::Unauthorized => {
                ApiError::new(converge_core::Code::Unauthorized, format!("the auth provider gave no token: {cause}"))
                    .into()
            }
            Error::Auth(cause) => cause,
            Error::Unsupported(what) => converge_core::Error::Unsupported(what),
            Error::Config(_) | Error::Protocol(_) | Error::Serve(_) => {
                converge_core::Error::fatal_from("the gRPC transport failed", e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use converge_core::{Code, ErrorClass};

    #[test]
    fn converts_to_the_core_classes() {
        let offline: converge_core::Error = Error::Offline { detail: "connect".into(), source: None }.into();
        assert_eq!(offline.class(), ErrorClass::Retryable);
        let api: converge_core::Error = Error::Api(ApiError::new(Code::TokenExpired, "old")).into();
        assert_eq!(api.class(), ErrorClass::Unauthorized);
        let glitch: converge_core::Error = Error::Auth(converge_core::Error::offline("idp down")).into();
        assert_eq!(glitch.class(), ErrorClass::Retryable);
        let fatal: converge_core::Error = Error::Protocol("bad fields".into()).into();
        assert_eq!(fatal.class(), ErrorClass::Fatal);
        let unsupported: converge_core::Error = Error::Unsupported("no Subscribe".into()).into();
        assert!(matches!(unsupported, converge_core::Error::Unsupported(_)));
    }
}
