//! The reqwest client: implements `SyncApi` by calling a server over the wire contract v1.
//!
//! Failures are sorted into the classes the sync worker relies on (see `classify.rs`):
//! connect errors, timeouts and cut connections are `Offline`; a problem+json answer is an
//! `Api` error with the body's code; anything the client cannot understand is `Fatal`.

mod classify;
mod events;

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use converge_core::api::is_trace_id;
use converge_core::wire::{Change, PullRequest, PullResponse, PushRequest, PushResponse, validate_idempotency_key};
use converge_core::{AuthProvider, Subscription, SyncApi};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{RequestBuilder, Url};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::problem::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, JSON_CONTENT_TYPE, TRACEPARENT};

/// The media type of an event stream.
const EVENT_STREAM: &str = "text/event-stream";

/// How long an event stream may stay silent before the client calls it cut (the server sends a
/// keepalive comment every 15 s).
const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(45);

/// Timeouts of an [`HttpClient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConfig {
    /// How long to wait for a connection (default 5 s).
    pub connect_timeout: Duration,
    /// How long a whole request may take, body included (default 30 s).
    pub request_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig { connect_timeout: Duration::from_secs(5), request_timeout: Duration::from_secs(30) }
    }
}

/// A `SyncApi` over HTTP. Cheap to share behind an `Arc`; the token can be swapped while in use.
pub struct HttpClient {
    http: reqwest::Client,
    /// For event streams: no limit on the whole request, a limit on each read instead.
    streams: reqwest::Client,
    base: Url,
    token: RwLock<String>,
    auth: Option<Arc<dyn AuthProvider>>,
    trace_id: RwLock<Option<String>>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient").field("base", &self.base.as_str()).finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client for the server at `base_url` (e.g. `http://127.0.0.1:7878`), with default timeouts.
    pub fn new(base_url: &str, token: impl Into<String>) -> Result<HttpClient> {
        HttpClient::with_config(base_url, token, ClientConfig::default())
    }

    /// A client with explicit timeouts.
    pub fn with_config(base_url: &str, token: impl Into<String>, config: ClientConfig) -> Result<HttpClient> {
        let base = Url::parse(base_url).map_err(|e| Error::Config(format!("base URL {base_url:?}: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(Error::Config(format!("base URL {base_url:?} is not an http(s) URL")));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(Error::Config(format!("base URL {base_url:?} has a query or fragment")));
        }
        // reqwest is built without a default crypto provider; install ring once per process
        // (a second install fails harmlessly).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(config.connect_timeout)
                .user_agent(concat!("converge-http/", env!("CARGO_PKG_VERSION")))
        };
        let built =
            |b: reqwest::ClientBuilder| b.build().map_err(|e| Error::Config(format!("building the HTTP client: {e}")));
        let http = built(builder().timeout(config.request_timeout))?;
        // The server sends a comment every 15 s; three missed ones mean the stream is dead.
        let streams = built(builder().read_timeout(STREAM_READ_TIMEOUT))?;
        Ok(HttpClient {
            http,
            streams,
            base,
            token: RwLock::new(token.into()),
            auth: None,
            trace_id: RwLock::new(None),
        })
    }

    /// Takes each request's token from `auth` instead of the fixed one (give the engine the
    /// same provider, so it can refresh the token after a 401 and resume).
    pub fn with_auth(mut self, auth: Arc<dyn AuthProvider>) -> HttpClient {
        self.auth = Some(auth);
        self
    }

    /// Replaces the bearer token for the requests that follow (after a refresh).
    pub fn set_token(&self, token: impl Into<String>) {
        *self.token.write().unwrap_or_else(PoisonError::into_inner) = token.into();
    }

    /// Sets (or clears) the W3C trace id sent as `traceparent` with each request that follows
    /// outside a sync cycle (a cycle's calls carry the cycle's id, see
    /// [`converge_core::api::in_cycle`]): 32 lowercase hex digits, not all zero.
    pub fn set_trace_id(&self, trace_id: Option<&str>) -> Result<()> {
        if let Some(id) = trace_id
            && !is_trace_id(id)
        {
            return Err(Error::Config("a trace id is 32 lowercase hex digits, not all zero".into()));
        }
        *self.trace_id.write().unwrap_or_else(PoisonError::into_inner) = trace_id.map(str::to_owned);
        Ok(())
    }

    /// The server's base URL.
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// `base` with `segments` appended, each percent-encoded as one path segment.
    fn url(&self, segments: &[&str]) -> Result<Url> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| Error::Config("the base URL cannot take a path".into()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// A fresh `traceparent` for the configured trace id: a new parent (span) id per request.
    fn traceparent(&self) -> Option<String> {
        let cycle = converge_core::api::cycle_trace_id().filter(|id| is_trace_id(id));
        let trace = cycle.or_else(|| self.trace_id.read().unwrap_or_else(PoisonError::into_inner).clone())?;
        Some(converge_core::api::traceparent_for(&trace))
    }

    /// `rb` with the token and trace context.
    async fn authorized(&self, rb: RequestBuilder) -> Result<RequestBuilder> {
        let token = match &self.auth {
            Some(auth) => auth.token().await.map_err(Error::Auth)?,
            None => self.token.read().unwrap_or_else(PoisonError::into_inner).clone(),
        };
        let mut rb = rb.bearer_auth(token);
        if let Some(tp) = self.traceparent() {
            rb = rb.header(TRACEPARENT, tp);
        }
        Ok(rb)
    }

    /// Sends a request with the token (and trace context); a non-2xx answer becomes an error.
    async fn send(&self, rb: RequestBuilder) -> Result<classify::Reply> {
        let rb = self.authorized(rb.header(ACCEPT, JSON_CONTENT_TYPE)).await?;
        let resp = rb.send().await.map_err(classify::transport)?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body: Vec<u8> = resp.bytes().await.map_err(classify::transport)?.into();
        if !status.is_success() {
            return Err(classify::error_response(status, &headers, &body));
        }
        Ok(classify::Reply { headers, body })
    }

    async fn push_inner(&self, req: PushRequest) -> Result<PushResponse> {
        validate_idempotency_key(&req.idempotency_key)?;
        let body = serde_json::to_vec(&req.batch).map_err(|e| {
            Error::Protocol(format!("encoding the batch: {}", converge_core::model::json_error_without_values(&e)))
        })?;
        let rb = self
            .http
            .post(self.url(&["v1", "sync", "mutations"])?)
            .header(IDEMPOTENCY_KEY, req.idempotency_key)
            .header(CONTENT_TYPE, JSON_CONTENT_TYPE)
            .body(body);
        let reply = self.send(rb).await?;
        let mut resp: PushResponse = decode(&reply)?;
        resp.replayed = reply
            .headers
            .get(IDEMPOTENT_REPLAYED)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        Ok(resp)
    }

    async fn pull_inner(&self, req: PullRequest) -> Result<PullResponse> {
        let mut url = self.url(&["v1", "sync", "changes"])?;
        if req.cursor.is_some() || req.limit.is_some() {
            let mut query = url.query_pairs_mut();
            if let Some(cursor) = &req.cursor {
                query.append_pair("cursor", cursor);
            }
            if let Some(limit) = req.limit {
                query.append_pair("limit", &limit.to_string());
            }
        }
        let reply = self.send(self.http.get(url)).await?;
        decode(&reply)
    }

    async fn subscribe_inner(&self, cursor: Option<String>) -> Result<Subscription> {
        let mut url = self.url(&["v1", "sync", "events"])?;
        if let Some(cursor) = &cursor {
            url.query_pairs_mut().append_pair("cursor", cursor);
        }
        let rb = self.authorized(self.streams.get(url).header(ACCEPT, EVENT_STREAM)).await?;
        let resp = rb.send().await.map_err(classify::transport)?;
        let status = resp.status();
        if !status.is_success() {
            let headers = resp.headers().clone();
            let body: Vec<u8> = resp.bytes().await.map_err(classify::transport)?.into();
            // A server from before live notices has no such route.
            if matches!(status.as_u16(), 404 | 405) {
                return Err(Error::Unsupported("the server offers no live change notices".into()));
            }
            return Err(classify::error_response(status, &headers, &body));
        }
        let content_type = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !content_type.starts_with(EVENT_STREAM) {
            return Err(Error::Protocol(format!("the events route answered {content_type:?}, not {EVENT_STREAM}")));
        }
        Ok(events::spawn_reader(resp))
    }

    async fn record_inner(&self, entity: &str, record_id: &str) -> Result<Change> {
        let url = self.url(&["v1", "records", entity, record_id])?;
        let reply = self.send(self.http.get(url)).await?;
        decode(&reply)
    }
}

/// Parses a 2xx body; one the client cannot read is a protocol error (fatal for the engine).
fn decode<T: DeserializeOwned>(reply: &classify::Reply) -> Result<T> {
    serde_json::from_slice(&reply.body).map_err(|e| {
        // serde_json's own message would quote the body: record contents.
        Error::Protocol(format!(
            "a success body did not parse: {}",
            converge_core::model::json_error_without_values(&e)
        ))
    })
}

#[async_trait]
impl SyncApi for HttpClient {
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

    #[test]
    fn base_urls_and_paths() {
        let c = HttpClient::new("http://example.test:7878/prefix/", "t").unwrap();
        assert_eq!(
            c.url(&["v1", "records", "notes", "a/b c"]).unwrap().as_str(),
            "http://example.test:7878/prefix/v1/records/notes/a%2Fb%20c"
        );
        let c = HttpClient::new("http://example.test", "t").unwrap();
        assert_eq!(c.url(&["v1", "sync", "changes"]).unwrap().as_str(), "http://example.test/v1/sync/changes");
        assert!(matches!(HttpClient::new("ftp://example.test", "t"), Err(Error::Config(_))));
        assert!(matches!(HttpClient::new("not a url", "t"), Err(Error::Config(_))));
        assert!(matches!(HttpClient::new("http://x.test/?a=1", "t"), Err(Error::Config(_))));
    }

    #[test]
    fn trace_ids_are_checked_and_sent_as_traceparent() {
        let c = HttpClient::new("http://example.test", "t").unwrap();
        assert!(c.traceparent().is_none());
        assert!(c.set_trace_id(Some("xyz")).is_err());
        assert!(c.set_trace_id(Some("00000000000000000000000000000000")).is_err());
        c.set_trace_id(Some("4bf92f3577b34da6a3ce929d0e0e4736")).unwrap();
        let tp = c.traceparent().unwrap();
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!((parts[0], parts[1], parts[3]), ("00", "4bf92f3577b34da6a3ce929d0e0e4736", "01"));
        assert_eq!(parts[2].len(), 16);
        assert_ne!(parts[2], "0000000000000000");
        c.set_trace_id(None).unwrap();
        assert!(c.traceparent().is_none());
    }

    /// Two engines syncing through one client at once: each call carries its own cycle's id.
    #[tokio::test]
    async fn cycles_sharing_a_client_keep_their_own_trace_ids() {
        let c = Arc::new(HttpClient::new("http://example.test", "t").unwrap());
        let (a, b) = ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1".to_owned(), "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb2".to_owned());
        let cycle = |id: String| {
            let c = c.clone();
            converge_core::api::in_cycle(id, async move {
                let mut seen = Vec::new();
                for _ in 0..20 {
                    seen.push(c.traceparent().unwrap());
                    tokio::task::yield_now().await;
                }
                seen
            })
        };
        let (seen_a, seen_b) = tokio::join!(cycle(a.clone()), cycle(b.clone()));
        assert!(seen_a.iter().all(|tp| tp.contains(&a)), "{seen_a:?}");
        assert!(seen_b.iter().all(|tp| tp.contains(&b)), "{seen_b:?}");
        assert!(c.traceparent().is_none(), "outside a cycle, no trace id");
    }
}
