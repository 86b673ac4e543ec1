//! Errors of choosing and building a transport client.

/// What can go wrong when connecting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL's scheme names no transport.
    #[error("{0:?}: a server URL starts with http://, https://, grpc:// or grpcs://")]
    Scheme(String),
    /// The transport the URL names is not in this build (a cargo feature is off).
    #[error("this build has no {0} transport (enable the converge-connect feature)")]
    NotBuilt(crate::Transport),
    /// The HTTP client could not be built.
    #[cfg(feature = "http")]
    #[error(transparent)]
    Http(#[from] converge_http::Error),
    /// The gRPC client could not be built.
    #[cfg(feature = "grpc")]
    #[error(transparent)]
    Grpc(#[from] converge_grpc::Error),
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for converge_core::Error {
    fn from(e: Error) -> Self {
        match e {
            #[cfg(feature = "http")]
            Error::Http(e) => e.into(),
            #[cfg(feature = "grpc")]
            Error::Grpc(e) => e.into(),
            e @ (Error::Scheme(_) | Error::NotBuilt(_)) => converge_core::Error::fatal_from("no transport", e),
        }
    }
}
