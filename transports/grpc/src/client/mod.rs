//! The tonic client: implements `SyncApi` by calling a server over the gRPC wire contract v1.
//!
//! Failures are sorted into the classes the sync worker relies on: a status with Converge's
//! `ErrorInfo` is an `Api` error with its code (and `RetryInfo` as the retry delay); a failed
//! connection, a cut stream or a timeout is `Offline`; anything the client cannot understand is
//! `Fatal`.

pub(crate) mod convert;

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use converge_core::wire::{Change, PullRequest, PullResponse, PushRequest, PushResponse, validate_idempotency_key};
use converge_core::{ApiError, AuthProvider, Code, Subscription, SyncApi};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::error::{Error, Result};
use crate::pb;
use crate::pb::sync_client::SyncClient;
use crate::status::from_status;

/// HTTP/2 pings this often while a call or stream is open, so a dead connection is noticed.
const PING_EVERY: Duration = Duration::from_secs(15);

/// Timeouts of a [`GrpcClient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// How long to wait for a connection (default 5 s).
    pub connect_timeout: Duration,
    /// How long a whole call may take (default 30 s); a `Subscribe` stream is bounded by its
    /// pings instead.
    pub request_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig { connect_timeout: Duration::from_secs(5), request_timeout: Duration::from_secs(30) }
    }
}

/// A `SyncApi` over gRPC. Cheap to share behind an `Arc`: calls share one HTTP/2 connection,
/// made on first use and again after it fails.
pub struct GrpcClient {
    channel: Channel,
    url: String,
    config: ClientConfig,
    token: RwLock<String>,
    auth: Option<Arc<dyn AuthProvider>>,
}

impl std::fmt::Debug for GrpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcClient").field("url", &self.url).finish_non_exhaustive()
    }
}

impl GrpcClient {
    /// A client for the server at `url` (`grpc://host:port`, or `grpcs://` for TLS with the
    /// system's roots), with default timeouts. Connects on first use.
    pub fn new(url: &str, token: impl Into<String>) -> Result<GrpcClient> {
        GrpcClient::with_config(url, token, ClientConfig::default())
    }

    /// A client with explicit timeouts.
    pub fn with_config(url: &str, token: impl Into<String>, config: ClientConfig) -> Result<GrpcClient> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("grpc://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("grpcs://") {
            (true, rest)
        } else {
            return Err(Error::Config(format!("server URL {url:?} is not a grpc:// or grpcs:// URL")));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(Error::Config(format!("server URL {url:?}: give only grpc(s)://host:port")));
        }
        let target = format!("{}://{authority}", if tls { "https" } else { "http" });
        let bad = |e: tonic::transport::Error| Error::Config(format!("server URL {url:?}: {e}"));
        let mut endpoint = Endpoint::from_shared(target)
            .map_err(bad)?
            .connect_timeout(config.connect_timeout)
            .http2_keep_alive_interval(PING_EVERY)
            .keep_alive_timeout(PING_EVERY)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true)
            // A batch of 500 or a page of 1,000 changes is well over HTTP/2's default 64 KiB
            // window, which would stall each on window updates.
            .initial_stream_window_size(2 << 20)
            .initial_connection_window_size(8 << 20)
            .user_agent(concat!("converge-grpc/", env!("CARGO_PKG_VERSION")))
            .map_err(bad)?;
        if tls {
            // tonic is built with ring; install it once per process (a second install fails
            // harmlessly).
            let _ = rustls::crypto::ring::default_provider().install_default();
            endpoint = endpoint.tls_config(ClientTlsConfig::new().with_native_roots()).map_err(bad)?;
        }
        Ok(GrpcClient {
            channel: endpoint.connect_lazy(),
            url: url.to_owned(),
            config,
            token: RwLock::new(token.into()),
            auth: None,
        })
    }

    /// Takes each call's token from `auth` instead of the fixed one (give the engine the same
    /// provider, so it can refresh the token after a refusal and resume).
    pub fn with_auth(mut self, auth: Arc<dyn AuthProvider>) -> GrpcClient {
        self.auth = Some(auth);
        self
    }

    /// Replaces the bearer token for the calls that follow.
    pub fn set_token(&self, token: impl Into<String>) {
        *self.token.write().unwrap_or_else(PoisonError::into_inner) = token.into();
    }

    /// The server URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn client(&self) -> SyncClient<Channel> {
        SyncClient::new(self.channel.clone()).max_decoding_message_size(usize::MAX)
    }

    /// `msg` with the token and, inside a sync cycle, its W3C trace context.
    async fn request<T>(&self, msg: T) -> Result<tonic::Request<T>> {
        let token = match &self.auth {
            Some(auth) => auth.token().await.map_err(Error::Auth)?,
            None => self.token.read().unwrap_or_else(PoisonError::into_inner).clone(),
        };
        let mut req = tonic::Request::new(msg);
        let bearer = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Error::Config("the token is not valid in a header".into()))?;
        req.metadata_mut().insert("authorization", bearer);
        if let Some(tp) = traceparent()
            && let Ok(value) = MetadataValue::try_from(tp)
        {
            req.metadata_mut().insert("traceparent", value);
        }
        Ok(req)
    }

    /// Runs a unary call within the request timeout.
    async fn call<T>(
        &self,
        call: impl Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<tonic::Response<T>> {
        match tokio::time::timeout(self.config.request_timeout, call).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(status)) => Err(classify(status)),
            Err(_) => Err(Error::Offline { detail: "the call timed out".into(), source: None }),
        }
    }

    async fn push_inner(&self, req: PushRequest) -> Result<PushResponse> {
        validate_idempotency_key(&req.idempotency_key)?;
        let mut request = self.request(convert::batch_to_pb(req.batch)).await?;
        let key = MetadataValue::try_from(req.idempotency_key.as_str())
            .map_err(|_| Error::Api(ApiError::invalid("an idempotency key is printable ASCII")))?;
        request.metadata_mut().insert(crate::metadata::IDEMPOTENCY_KEY, key);
        let resp = self.call(self.client().push(request)).await?;
        let replayed = resp
            .metadata()
            .get(crate::metadata::IDEMPOTENT_REPLAYED)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        let mut out = convert::push_response_from_pb(resp.into_inner()).map_err(Error::Protocol)?;
        out.replayed = replayed;
        Ok(out)
    }

    async fn pull_inner(&self, req: PullRequest) -> Result<PullResponse> {
        if req.limit == Some(0) {
            // 0 means "the default" on this wire; say what HTTP says instead of asking.
            return Err(ApiError::invalid("limit is at least 1").into());
        }
        let msg = pb::PullRequest { cursor: req.cursor.unwrap_or_default(), limit: req.limit.unwrap_or(0) };
        let resp = self.call(self.client().pull(self.request(msg).await?)).await?;
        convert::pull_response_from_pb(resp.into_inner()).map_err(Error::Protocol)
    }

    async fn record_inner(&self, entity: &str, record_id: &str) -> Result<Change> {
        let msg = pb::GetRecordRequest { entity: entity.to_owned(), record_id: record_id.to_owned() };
        let resp = self.call(self.client().get_record(self.request(msg).await?)).await?;
        convert::record_from_pb(resp.into_inner()).map_err(Error::Protocol)
    }

    async fn subscribe_inner(&self, cursor: Option<String>) -> Result<Subscription> {
        let msg = pb::SubscribeRequest { cursor: cursor.unwrap_or_default() };
        let mut client = self.client();
        let opened = client.subscribe(self.request(msg).await?);
        let mut stream = match tokio::time::timeout(self.config.request_timeout, opened).await {
            Ok(Ok(resp)) => resp.into_inner(),
            Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
                return Err(Error::Unsupported("the server offers no live change notices".into()));
            }
            Ok(Err(status)) => return Err(classify(status)),
            Err(_) => return Err(Error::Offline { detail: "subscribing timed out".into(), source: None }),
        };
        let (tx, subscription) = Subscription::channel();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = stream.message() => next,
                    () = tx.closed() => return,
                };
                let item = match next {
                    Ok(Some(n)) => Ok(converge_core::wire::Notice { cursor: n.cursor }),
                    Ok(None) => return,
                    Err(status) => Err(classify(status).into()),
                };
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(subscription)
    }
}

/// A failed call's status in the engine's classes.
fn classify(status: tonic::Status) -> Error {
    if let Some(api) = from_status(&status) {
        return Error::Api(api);
    }
    match status.code() {
        // tonic's own statuses for a connection that failed, was cut or timed out.
        tonic::Code::Unavailable
        | tonic::Code::Unknown
        | tonic::Code::Cancelled
        | tonic::Code::DeadlineExceeded
        | tonic::Code::Internal
        | tonic::Code::Aborted => {
            Error::Offline { detail: "the server could not be reached".into(), source: Some(Box::new(status)) }
        }
        tonic::Code::Unauthenticated => Error::Api(ApiError::new(Code::Unauthorized, status.message())),
        tonic::Code::PermissionDenied => Error::Api(ApiError::new(Code::Forbidden, status.message())),
        tonic::Code::ResourceExhausted => Error::Api(ApiError::new(Code::RateLimited, status.message())),
        code => Error::Protocol(format!("a status without Converge's error details: {code:?}: {}", status.message())),
    }
}

/// `traceparent` for the current sync cycle's trace id, with a new span id.
fn traceparent() -> Option<String> {
    let trace = converge_core::api::cycle_trace_id().filter(|id| converge_core::api::is_trace_id(id))?;
    Some(converge_core::api::traceparent_for(&trace))
}

#[async_trait]
impl SyncApi for GrpcClient {
    async fn push(&self, req: PushRequest) -> converge_core::Result<PushResponse> {
        Ok(self.push_inner(req).await?)
    }

    async fn pull(&self, req: PullRequest) -> converge_core::Result<PullResponse> {
        Ok(self.pull_inner(req).await?)
    }

    async fn record(&self, entity: &str, record_id: &str) -> converge_core::Result<Change> {
        Ok(self.record_inner(entity, record_id).await?)
    }

    async fn subscribe(&self, cursor: Option<String>) -> converge_core::Result<Subscription> {
        Ok(self.subscribe_inner(cursor).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls() {
        assert!(GrpcClient::new("grpc://127.0.0.1:7879", "t").is_ok());
        assert!(GrpcClient::new("grpc://127.0.0.1:7879/", "t").is_ok());
        assert!(GrpcClient::new("grpcs://sync.example.com", "t").is_ok());
        for bad in ["http://127.0.0.1:7879", "grpc://", "grpc://h:1/path", "grpc://u@h:1", "nonsense"] {
            assert!(matches!(GrpcClient::new(bad, "t"), Err(Error::Config(_))), "{bad}");
        }
    }

    #[test]
    fn statuses_sort_into_classes() {
        assert!(matches!(classify(tonic::Status::unavailable("connection refused")), Error::Offline { .. }));
        assert!(matches!(classify(tonic::Status::unknown("h2 error")), Error::Offline { .. }));
        assert!(matches!(classify(tonic::Status::invalid_argument("?")), Error::Protocol(_)));
        let api = crate::status::to_status(&ApiError::new(Code::CursorExpired, "old"));
        assert!(matches!(classify(api), Error::Api(ApiError { code: Code::CursorExpired, .. })));
    }
}
