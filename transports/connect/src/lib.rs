//! Choosing a transport is one line: [`connect`] takes the server's URL and returns the
//! `SyncApi` that speaks to it — HTTP JSON for `http://` and `https://`, gRPC for `grpc://` and
//! `grpcs://`. The CLI and the app bindings both open their servers through it.
//!
//! ```no_run
//! # fn main() -> Result<(), converge_connect::Error> {
//! use std::sync::Arc;
//! let auth = Arc::new(converge_core::StaticToken("token".into()));
//! let api = converge_connect::connect("grpc://127.0.0.1:7879", auth)?;
//! # let _ = api; Ok(()) }
//! ```

pub mod error;

use std::sync::Arc;
use std::time::Duration;

use converge_core::{AuthProvider, SyncApi};

pub use error::{Error, Result};

/// The wire a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP JSON (`http://`, `https://`).
    Http,
    /// gRPC (`grpc://`, `grpcs://`).
    Grpc,
}

impl Transport {
    /// The transport of `url`, by its scheme.
    pub fn of(url: &str) -> Result<Transport> {
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase()).unwrap_or_default();
        match scheme.as_str() {
            "http" | "https" => Ok(Transport::Http),
            "grpc" | "grpcs" => Ok(Transport::Grpc),
            _ => Err(Error::Scheme(url.to_owned())),
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Http => "http",
            Transport::Grpc => "grpc",
        })
    }
}

/// Timeouts of the client [`connect`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// How long to wait for a connection (default 5 s).
    pub connect_timeout: Duration,
    /// How long a whole request may take (default 30 s).
    pub request_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options { connect_timeout: Duration::from_secs(5), request_timeout: Duration::from_secs(30) }
    }
}

/// The `SyncApi` for the server at `url`, asking `auth` for each request's token (give the
/// engine the same provider, so it can refresh a refused token). Nothing is sent until the
/// first call.
pub fn connect(url: &str, auth: Arc<dyn AuthProvider>) -> Result<Arc<dyn SyncApi>> {
    connect_with(url, auth, Options::default())
}

/// [`connect`] with explicit timeouts.
pub fn connect_with(url: &str, auth: Arc<dyn AuthProvider>, options: Options) -> Result<Arc<dyn SyncApi>> {
    match Transport::of(url)? {
        #[cfg(feature = "http")]
        Transport::Http => {
            let config = converge_http::ClientConfig {
                connect_timeout: options.connect_timeout,
                request_timeout: options.request_timeout,
            };
            Ok(Arc::new(converge_http::HttpClient::with_config(url, "", config)?.with_auth(auth)))
        }
        #[cfg(feature = "grpc")]
        Transport::Grpc => {
            let config = converge_grpc::ClientConfig {
                connect_timeout: options.connect_timeout,
                request_timeout: options.request_timeout,
            };
            Ok(Arc::new(converge_grpc::GrpcClient::with_config(url, "", config)?.with_auth(auth)))
        }
        #[allow(unreachable_patterns)]
        other => Err(Error::NotBuilt(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn schemes_pick_the_transport() {
        assert_eq!(Transport::of("http://127.0.0.1:7878").unwrap(), Transport::Http);
        assert_eq!(Transport::of("HTTPS://sync.example.com").unwrap(), Transport::Http);
        assert_eq!(Transport::of("grpc://127.0.0.1:7879").unwrap(), Transport::Grpc);
        assert_eq!(Transport::of("grpcs://sync.example.com").unwrap(), Transport::Grpc);
        for bad in ["ftp://x", "127.0.0.1:7878", "", "grpc:/x"] {
            assert!(matches!(Transport::of(bad), Err(Error::Scheme(_))), "{bad}");
        }
        let auth: Arc<dyn AuthProvider> = Arc::new(converge_core::StaticToken("t".into()));
        assert!(connect("grpc://127.0.0.1:7879", auth.clone()).is_ok());
        assert!(connect("http://127.0.0.1:7878", auth.clone()).is_ok());
        let e = connect("grpc://h:1/path", auth).err().unwrap();
        assert_eq!(converge_core::Error::from(e).class(), converge_core::ErrorClass::Fatal);
    }
}
