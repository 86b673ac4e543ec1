//! The tonic server adapter: serves any `Tenancy` over the gRPC wire contract v1, beside the
//! standard `grpc.health.v1.Health` service and server reflection (v1 and v1alpha), so stock
//! tools (grpcurl, grpc_health_probe) work against it.
//!
//! The adapter is thin: it authenticates, reads the `idempotency-key` metadata, turns messages
//! into core's wire types and back, and maps errors to statuses (`status.rs`). Everything else
//! is the service's.

mod conn;
mod convert;
mod limit;

pub use conn::ConnLimits;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use converge_core::wire::{Limits, PullRequest, PushRequest, validate_idempotency_key};
use converge_core::{ApiError, Authenticator, Code, Scope, Tenancy};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::service::Routes;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::pb;
use crate::pb::sync_server::{Sync, SyncServer};
use crate::status::to_status;

use crate::metadata::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};

/// HTTP/2 pings this often keep a quiet `Subscribe` stream open through proxies.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// HTTP/2 flow-control windows: a batch of 500 or a page of 1,000 changes is well over the
/// protocol's default 64 KiB, which would stall each on window updates.
pub(crate) const WINDOW: u32 = 2 << 20;
/// The connection's window, shared by its calls.
pub(crate) const CONNECTION_WINDOW: u32 = 8 << 20;

/// The server adapter's settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerConfig {
    /// Message size and batch size limits (defaults: 1 MiB, 500 mutations), as on HTTP.
    pub limits: Limits,
}

/// Serves the contract's `Sync` service over a tenancy.
#[derive(Clone)]
struct SyncAdapter {
    tenancy: Arc<dyn Tenancy>,
    auth: Arc<dyn Authenticator>,
    limits: Limits,
}

fn refuse(code: Code, detail: &str) -> Status {
    to_status(&ApiError::new(code, detail))
}

/// A core error as the status a client sees.
fn answer(e: converge_core::Error) -> Status {
    let api = e.into_answer();
    if api.code.class() == converge_core::ErrorClass::Retryable {
        tracing::warn!(code = %api.code, "request failed");
    } else {
        tracing::debug!(code = %api.code, "request refused");
    }
    to_status(&api)
}

impl SyncAdapter {
    /// The caller of a request, from its `authorization: Bearer` metadata.
    fn caller(&self, metadata: &MetadataMap) -> Result<Scope, Status> {
        let value = metadata
            .get("authorization")
            .ok_or_else(|| refuse(Code::Unauthorized, "an authorization: Bearer token is required"))?;
        let token = value
            .to_str()
            .ok()
            .and_then(converge_core::api::bearer_token)
            .ok_or_else(|| refuse(Code::Unauthorized, "the authorization metadata is not a Bearer token"))?;
        self.auth.authenticate(token).map_err(|e| to_status(&e))
    }
}

/// The `idempotency-key` metadata: present, one value, 1-255 printable ASCII characters.
fn idempotency_key(metadata: &MetadataMap) -> Result<String, Status> {
    let mut values = metadata.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else {
        return Err(refuse(Code::IdempotencyKeyMissing, "the idempotency-key metadata is required"));
    };
    if values.next().is_some() {
        return Err(refuse(Code::InvalidRequest, "send one idempotency-key"));
    }
    let key = value
        .to_str()
        .map_err(|_| refuse(Code::InvalidRequest, "an idempotency-key is 1-255 printable ASCII characters"))?;
    validate_idempotency_key(key).map_err(|e| to_status(&e))?;
    Ok(key.to_owned())
}

type NoticeStream = Pin<Box<dyn Stream<Item = Result<pb::ChangeNotice, Status>> + Send>>;

/// A span per call (the method and the caller's trace id), as the HTTP adapter makes per request.
fn span<T>(req: &Request<T>, rpc: &'static str) -> tracing::Span {
    let span = tracing::info_span!("grpc_request", rpc, trace_id = tracing::field::Empty);
    let traceparent = req.metadata().get("traceparent").and_then(|v| v.to_str().ok());
    if let Some(id) = traceparent.and_then(converge_core::api::trace_id_of) {
        span.record("trace_id", id);
    }
    span
}

#[tonic::async_trait]
impl Sync for SyncAdapter {
    async fn push(&self, req: Request<pb::PushRequest>) -> Result<Response<pb::PushResponse>, Status> {
        let span = span(&req, "Push");
        self.push_call(req).instrument(span).await
    }

    async fn pull(&self, req: Request<pb::PullRequest>) -> Result<Response<pb::PullResponse>, Status> {
        let span = span(&req, "Pull");
        self.pull_call(req).instrument(span).await
    }

    async fn get_record(&self, req: Request<pb::GetRecordRequest>) -> Result<Response<pb::Record>, Status> {
        let span = span(&req, "GetRecord");
        self.get_record_call(req).instrument(span).await
    }

    type SubscribeStream = NoticeStream;

    async fn subscribe(&self, req: Request<pb::SubscribeRequest>) -> Result<Response<NoticeStream>, Status> {
        let span = span(&req, "Subscribe");
        self.subscribe_call(req).instrument(span).await
    }
}

impl SyncAdapter {
    async fn push_call(&self, req: Request<pb::PushRequest>) -> Result<Response<pb::PushResponse>, Status> {
        let scope = self.caller(req.metadata())?;
        let idempotency_key = idempotency_key(req.metadata())?;
        let batch = convert::batch_from_pb(req.into_inner()).map_err(|e| to_status(&e))?;
        batch.validate(&self.limits).map_err(|e| to_status(&e))?;
        tracing::debug!(tenant = %scope.tenant, mutations = batch.mutations.len(), "push");
        let resp = self.tenancy.scoped(scope).push(PushRequest { idempotency_key, batch }).await.map_err(answer)?;
        let replayed = resp.replayed;
        let mut out = Response::new(convert::push_response_to_pb(resp));
        if replayed {
            out.metadata_mut().insert(IDEMPOTENT_REPLAYED, MetadataValue::from_static("true"));
        }
        Ok(out)
    }

    async fn pull_call(&self, req: Request<pb::PullRequest>) -> Result<Response<pb::PullResponse>, Status> {
        let scope = self.caller(req.metadata())?;
        let pb::PullRequest { cursor, limit } = req.into_inner();
        let req =
            PullRequest { cursor: Some(cursor).filter(|c| !c.is_empty()), limit: Some(limit).filter(|&n| n != 0) };
        let page = self.tenancy.scoped(scope).pull(req).await.map_err(answer)?;
        Ok(Response::new(convert::pull_response_to_pb(page)))
    }

    async fn get_record_call(&self, req: Request<pb::GetRecordRequest>) -> Result<Response<pb::Record>, Status> {
        let scope = self.caller(req.metadata())?;
        let pb::GetRecordRequest { entity, record_id } = req.into_inner();
        let change = self.tenancy.scoped(scope).record(&entity, &record_id).await.map_err(answer)?;
        Ok(Response::new(convert::record_to_pb(change)))
    }

    async fn subscribe_call(&self, req: Request<pb::SubscribeRequest>) -> Result<Response<NoticeStream>, Status> {
        let scope = self.caller(req.metadata())?;
        let cursor = Some(req.into_inner().cursor).filter(|c| !c.is_empty());
        let subscription = self.tenancy.scoped(scope).subscribe(cursor).await.map_err(answer)?;
        let stream = ReceiverStream::new(subscription.into_receiver())
            .map(|notice| notice.map(convert::notice_to_pb).map_err(answer));
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The contract's `Sync` service over `tenancy`, authenticating callers with `auth`, plus the
/// health service (reporting `converge.v1.Sync` as serving) and reflection.
pub async fn routes(tenancy: Arc<dyn Tenancy>, auth: Arc<dyn Authenticator>, config: ServerConfig) -> Result<Routes> {
    let limits = config.limits;
    let sync = SyncServer::new(SyncAdapter { tenancy, auth, limits })
        .max_decoding_message_size(limits.max_body_bytes)
        .max_encoding_message_size(usize::MAX);
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<SyncServer<SyncAdapter>>().await;
    fn reflection() -> tonic_reflection::server::Builder<'static> {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    }
    let reflection_v1 = reflection().build_v1().map_err(|e| Error::Config(format!("server reflection: {e}")))?;
    let reflection_v1alpha =
        reflection().build_v1alpha().map_err(|e| Error::Config(format!("server reflection: {e}")))?;
    Ok(Routes::new(limit::MessageLimit::new(sync, limits.max_body_bytes))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha))
}

/// Serves `routes` on `listener` with the default [`ConnLimits`] until `shutdown` completes,
/// then lets running calls finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    routes: Routes,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    serve_with(listener, routes, shutdown, ConnLimits::default()).await
}

/// Serves `routes` on `listener`, holding at most `limits.max_connections` connections and
/// closing idle ones, until `shutdown` completes, then lets running calls finish.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    routes: Routes,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ConnLimits,
) -> Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, ?limits, "serving gRPC");
    }
    // Each connection gets TCP_NODELAY where it is accepted (the builder's own TCP settings do
    // not apply to connections handed to it).
    let (incoming, accepting) = conn::incoming(listener, limits);
    let served = tonic::transport::Server::builder()
        .initial_stream_window_size(WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .http2_keepalive_interval(Some(KEEPALIVE))
        .http2_keepalive_timeout(Some(KEEPALIVE))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::Serve(e.into()));
    accepting.abort();
    served
}
