//! The axum server adapter: serves any `Tenancy` over the wire contract v1.
//!
//! [`router`] builds the routes of [`ROUTES`]; the same constants name the paths of the OpenAPI
//! document ([`openapi`]), and a test checks that the two agree. Every error leaves as
//! `application/problem+json` (see `response.rs`); a client mistake is never a 500.

mod events;
mod extract;
mod handlers;
mod listen;
mod metrics;
mod openapi;
mod response;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use converge_core::wire::Limits;
use converge_core::{Authenticator, Tenancy};

use crate::error::Result;

pub use events::{KEEPALIVE, NOTICE_EVENT};
pub use listen::ConnLimits;
pub use openapi::{openapi, openapi_for};

/// `POST`: push a batch of mutations.
pub const PUSH_PATH: &str = "/v1/sync/mutations";
/// `GET`: a page of the change feed.
pub const CHANGES_PATH: &str = "/v1/sync/changes";
/// `GET`: live change notices (server-sent events).
pub const EVENTS_PATH: &str = "/v1/sync/events";
/// `GET`: one record, with its version as the ETag.
pub const RECORD_PATH: &str = "/v1/records/{entity}/{record_id}";
/// `GET`: liveness, no auth.
pub const HEALTHZ_PATH: &str = "/healthz";
/// `GET`: Prometheus text, no auth.
pub const METRICS_PATH: &str = "/metrics";
/// `GET`: the OpenAPI 3.1 document, no auth.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// One route the router serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    /// The HTTP method, upper case.
    pub method: &'static str,
    /// The path template, with `{param}` segments as in OpenAPI.
    pub path: &'static str,
    /// Whether the route takes a bearer token.
    pub auth: bool,
}

/// Every route of the wire contract; the router and the OpenAPI document both follow this list.
pub const ROUTES: &[Route] = &[
    Route { method: "POST", path: PUSH_PATH, auth: true },
    Route { method: "GET", path: CHANGES_PATH, auth: true },
    Route { method: "GET", path: EVENTS_PATH, auth: true },
    Route { method: "GET", path: RECORD_PATH, auth: true },
    Route { method: "GET", path: HEALTHZ_PATH, auth: false },
    Route { method: "GET", path: METRICS_PATH, auth: false },
    Route { method: "GET", path: OPENAPI_PATH, auth: false },
];

/// The server adapter's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    /// Body size and batch size limits (defaults: 1 MiB, 500 mutations).
    pub limits: Limits,
    /// How long a request's body may take to arrive after its headers; past it the request is
    /// refused with 400 `invalid_request` (default 30 s).
    pub body_timeout: std::time::Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig { limits: Limits::default(), body_timeout: std::time::Duration::from_secs(30) }
    }
}

impl ServerConfig {
    /// The default settings with `limits`.
    pub fn with_limits(limits: Limits) -> Self {
        ServerConfig { limits, ..ServerConfig::default() }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) tenancy: Arc<dyn Tenancy>,
    pub(crate) auth: Arc<dyn Authenticator>,
    pub(crate) limits: Limits,
    pub(crate) body_timeout: std::time::Duration,
    pub(crate) metrics: Arc<metrics::Metrics>,
    pub(crate) openapi_json: Arc<str>,
}

/// The HTTP API over `tenancy`, authenticating callers with `auth`.
///
/// Each router has its own metrics registry (no process-wide state), served at `/metrics`.
pub fn router(tenancy: Arc<dyn Tenancy>, auth: Arc<dyn Authenticator>, config: ServerConfig) -> Router {
    let openapi_json = openapi_for(&config.limits).to_string();
    let state = AppState {
        tenancy,
        auth,
        limits: config.limits,
        body_timeout: config.body_timeout,
        metrics: Arc::new(metrics::Metrics::new()),
        openapi_json: openapi_json.into(),
    };
    Router::new()
        .route(PUSH_PATH, post(handlers::push))
        .route(CHANGES_PATH, get(handlers::changes))
        .route(EVENTS_PATH, get(events::events))
        .route(RECORD_PATH, get(handlers::record))
        .route(HEALTHZ_PATH, get(handlers::healthz))
        .route(METRICS_PATH, get(handlers::metrics))
        .route(OPENAPI_PATH, get(handlers::openapi_json))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(DefaultBodyLimit::max(config.limits.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .with_state(state)
}

/// Serves `router` on `listener` with the default [`ConnLimits`] until `shutdown` completes,
/// then lets running requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    serve_with(listener, router, shutdown, ConnLimits::default()).await
}

/// [`serve`] with slow and idle clients bounded as `limits` says.
pub async fn serve_with(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ConnLimits,
) -> Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, ?limits, "serving HTTP");
    }
    listen::serve_bounded(listener, router, shutdown, limits).await?;
    Ok(())
}
