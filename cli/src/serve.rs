//! `converge serve`, `converge token` and `converge shards`: the sync server on the embedded
//! SQLite store or on PostgreSQL (one database, or several as tenant shards).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use converge_core::CheckMode;
use converge_core::Tenancy;
use converge_core::check::Rules;
use converge_core::server_store::ServerStore;
use converge_core::wire::Limits;
use converge_http::server::{ServerConfig, router};
use converge_server::{
    AdmissionConfig, JwtAuth, PgOptions, PgServerStore, ShardedStore, SqliteServerStore, SyncService,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::duration;

/// Below this, idempotency keys and op results may expire while a client still retries (the
/// design keeps keys at least 24 hours).
const MIN_SAFE_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// The secret used when none is given: fine on a laptop, refused nowhere, announced loudly.
pub(crate) const DEV_SECRET: &str = "converge-development-secret-do-not-use-in-production";

/// Options of `converge serve`.
#[derive(Args)]
pub(crate) struct ServeArgs {
    /// The server store: a SQLite file path (default converge-server.db), or a PostgreSQL URL
    /// (postgres://user:password@host/database). Several PostgreSQL URLs are tenant shards
    /// (repeat --db). Default: CONVERGE_DB, URLs separated by spaces.
    #[arg(long = "db")]
    db: Vec<String>,
    /// PostgreSQL connections per database, per node.
    #[arg(long, default_value_t = 16)]
    pg_pool: usize,
    /// The HTTP address to listen on.
    #[arg(long, default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// The gRPC address to listen on, beside HTTP on the same store; `off` serves HTTP only.
    #[arg(long, default_value = "127.0.0.1:7879", value_parser = parse_grpc_listen)]
    grpc_listen: GrpcListen,
    /// The HS256 secret that signs tokens. Without one the server uses a development secret,
    /// with a warning, and only on loopback addresses: it refuses to listen beyond them.
    #[arg(long, env = "CONVERGE_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Most mutations in one batch.
    #[arg(long, default_value_t = 500)]
    max_batch: usize,
    /// Most bytes in one request body.
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Most bytes of a record's fields as JSON.
    #[arg(long, default_value_t = 256 << 10)]
    max_record_bytes: usize,
    /// The weakest check mode accepted for an entity, e.g. `orders=record` (repeatable).
    #[arg(long = "pin", value_parser = parse_pin)]
    pins: Vec<(String, CheckMode)>,
    /// How long tombstones, op results and idempotency keys are kept (90s, 15m, 1h, 30d). A
    /// client whose cursor is older re-syncs from the start; a retry older than this runs as new.
    #[arg(long, default_value = "30d", value_parser = positive_duration)]
    retention: Duration,
    /// How often to compact away what is older than the retention (also once at start-up).
    #[arg(long, default_value = "1h", value_parser = positive_duration)]
    compact_every: Duration,
    /// HTTP: how long a connection may wait for a request's headers to be complete (from its
    /// start, or the end of the last response); then it is closed.
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    header_timeout: Duration,
    /// HTTP: how long a request's body may take to arrive; then 400 invalid_request.
    #[arg(long, default_value = "30s", value_parser = positive_duration)]
    body_timeout: Duration,
    /// HTTP and gRPC: a connection with no byte sent or received for this long is closed (HTTP/2
    /// pings every 15 s keep a quiet gRPC stream busy).
    #[arg(long, default_value = "60s", value_parser = positive_duration)]
    idle_timeout: Duration,
    /// HTTP and gRPC, each: connections open at once; more wait in the kernel's accept queue.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Pushes running at once, all tenants together; past it a push is 503 `unavailable` with
    /// Retry-After (0: no limit). A quarter is kept for batches of critical entity types only.
    #[arg(long, default_value_t = 256)]
    max_inflight: usize,
    /// Pushes running at once for one tenant; past it a push is 429 `rate_limited` with
    /// Retry-After (0: no limit). Critical batches are not counted against it.
    #[arg(long, default_value_t = 32)]
    max_inflight_per_tenant: usize,
    /// Requests (pushes and pulls) per second per tenant, as a token bucket holding one second's
    /// worth; past it 429 `rate_limited` with Retry-After. Off by default. Critical batches skip it.
    #[arg(long)]
    rate: Option<f64>,
    /// An entity type whose batches are admitted first under pressure (repeatable, or comma
    /// separated), e.g. `--critical payments`. A batch of only critical types skips the
    /// per-tenant limit and the rate and may use the whole --max-inflight.
    #[arg(long = "critical", value_delimiter = ',')]
    critical: Vec<String>,
}

/// How the server bounds its clients: slow and idle HTTP clients, and load.
#[derive(Debug, Clone)]
pub(crate) struct Bounds {
    /// Header, idle and connection limits.
    pub(crate) conn: converge_http::server::ConnLimits,
    /// The request body deadline.
    pub(crate) body_timeout: Duration,
    /// Pushes at once, the per-tenant rate, and the critical entity types.
    pub(crate) admission: AdmissionConfig,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            conn: Default::default(),
            body_timeout: ServerConfig::default().body_timeout,
            admission: AdmissionConfig::default(),
        }
    }
}

/// Where gRPC listens, if anywhere.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GrpcListen(pub(crate) Option<SocketAddr>);

fn parse_grpc_listen(s: &str) -> Result<GrpcListen, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(GrpcListen(None));
    }
    s.parse().map(|a| GrpcListen(Some(a))).map_err(|_| format!("{s:?}: give HOST:PORT, or off"))
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    let d = duration::parse(s)?;
    if d.is_zero() {
        return Err(format!("{s:?}: must be at least 1s"));
    }
    Ok(d)
}

/// How `converge serve` compacts its store: a background task, once at start-up and then every
/// `every`, removing what is older than `retention`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Compaction {
    /// Tombstones, op results and idempotency keys older than this go.
    pub(crate) retention: Duration,
    /// Time between runs.
    pub(crate) every: Duration,
}

fn parse_pin(s: &str) -> Result<(String, CheckMode), String> {
    let (entity, mode) = s.split_once('=').ok_or_else(|| format!("{s:?}: write ENTITY=MODE, e.g. orders=record"))?;
    converge_core::model::validate_entity(entity).map_err(|e| e.to_string())?;
    let mode = CheckMode::parse(mode).map_err(|_| format!("{mode:?}: a check mode is lww, fields or record"))?;
    Ok((entity.to_owned(), mode))
}

/// Options of `converge token`.
#[derive(Args)]
pub(crate) struct TokenArgs {
    /// The tenant the token is for.
    #[arg(long)]
    tenant: String,
    /// The user the token is for.
    #[arg(long)]
    user: String,
    /// How long it is valid: 90s, 15m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = duration::parse)]
    ttl: Duration,
    /// The HS256 secret (the server's).
    #[arg(long, env = "CONVERGE_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Narrow the token to these scopes (comma separated): sync:read (pull, records, events),
    /// sync:write (push). Default: both.
    #[arg(long, value_delimiter = ',')]
    scope: Vec<String>,
    /// Narrow the token to these entity types (comma separated). Default: all.
    #[arg(long, value_delimiter = ',')]
    entities: Vec<String>,
}

fn secret(given: Option<String>, warn: bool) -> String {
    given.filter(|s| !s.is_empty()).unwrap_or_else(|| {
        if warn {
            eprintln!("warning: no --jwt-secret or CONVERGE_JWT_SECRET given; using the development secret");
        }
        DEV_SECRET.to_owned()
    })
}

pub(crate) fn token(args: TokenArgs) -> Result<()> {
    if args.tenant.is_empty() || args.user.is_empty() {
        bail!("--tenant and --user must not be empty");
    }
    let auth = JwtAuth::new(secret(args.jwt_secret, false).as_bytes());
    let scope = (!args.scope.is_empty()).then(|| args.scope.join(" "));
    let entities = (!args.entities.is_empty()).then_some(args.entities.as_slice());
    println!("{}", auth.issue_scoped(&args.tenant, &args.user, args.ttl, scope.as_deref(), entities)?);
    Ok(())
}

/// A server running inside this process.
pub(crate) struct RunningServer {
    /// The bound HTTP address.
    pub(crate) addr: SocketAddr,
    /// The bound gRPC address, if gRPC is served.
    pub(crate) grpc_addr: Option<SocketAddr>,
    stop: Option<watch::Sender<bool>>,
    task: JoinHandle<converge_http::Result<()>>,
    grpc_task: Option<JoinHandle<converge_grpc::Result<()>>>,
    compaction: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// The base URL of the HTTP API.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The URL of the gRPC API, if served.
    pub(crate) fn grpc_url(&self) -> Option<String> {
        self.grpc_addr.map(|a| format!("grpc://{a}"))
    }

    /// The URL of `transport`'s API (HTTP's if gRPC is off).
    pub(crate) fn url_of(&self, transport: converge_connect::Transport) -> String {
        match transport {
            converge_connect::Transport::Grpc => self.grpc_url().unwrap_or_else(|| self.url()),
            converge_connect::Transport::Http => self.url(),
        }
    }

    /// Stops accepting, finishes requests in flight, and waits.
    pub(crate) async fn stop(mut self) -> Result<()> {
        if let Some(c) = self.compaction.take() {
            // A chunk already running on the blocking pool still commits or rolls back whole.
            c.abort();
        }
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        self.task.await?.context("the HTTP server failed")?;
        if let Some(grpc) = self.grpc_task.take() {
            grpc.await?.context("the gRPC server failed")?;
        }
        Ok(())
    }
}

/// The SQLite server store at `db`.
pub(crate) fn sqlite_store(db: &Path) -> Result<Arc<dyn ServerStore>> {
    let store =
        SqliteServerStore::open(db).with_context(|| format!("cannot open the server store {}", db.display()))?;
    Ok(Arc::new(store))
}

/// Whether `db` names a PostgreSQL database rather than a SQLite file.
pub(crate) fn is_postgres(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// The `--db` values given, else CONVERGE_DB's (split at spaces), else the default SQLite file.
fn dbs(given: Vec<String>) -> Vec<String> {
    if !given.is_empty() {
        return given;
    }
    match std::env::var("CONVERGE_DB") {
        Ok(v) if !v.trim().is_empty() => v.split_whitespace().map(str::to_owned).collect(),
        _ => vec!["converge-server.db".to_owned()],
    }
}

/// The store `dbs` name: one SQLite file, one PostgreSQL database, or PostgreSQL shards. Returns
/// the store and how to describe it (no passwords).
pub(crate) async fn open_store(dbs: &[String], pg: &PgOptions) -> Result<(Arc<dyn ServerStore>, String)> {
    match dbs {
        [] => bail!("no --db given"),
        [one] if !is_postgres(one) => Ok((sqlite_store(Path::new(one))?, one.clone())),
        [one] => {
            let store = PgServerStore::connect(one, pg)
                .await
                .with_context(|| format!("cannot open the PostgreSQL store {}", redact(one)))?;
            Ok((Arc::new(store), redact(one)))
        }
        many => {
            if let Some(file) = many.iter().find(|db| !is_postgres(db)) {
                bail!("{file:?} is not a PostgreSQL URL: several --db values are shards, and shards are PostgreSQL");
            }
            let store = ShardedStore::connect(many, pg).await.context("cannot open the shards")?;
            let described = format!("{} PostgreSQL shards", many.len());
            Ok((Arc::new(store), described))
        }
    }
}

/// A database URL without its password.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Starts the server on `store`, HTTP on `listen` (slow and idle clients bounded as `bounds`
/// says) and gRPC on `grpc` (if given), both over one service; compacts it in the background if
/// `compaction` is set.
pub(crate) async fn start(
    store: Arc<dyn ServerStore>,
    listen: SocketAddr,
    grpc: Option<SocketAddr>,
    secret: &str,
    rules: Rules,
    compaction: Option<Compaction>,
    bounds: Bounds,
) -> Result<RunningServer> {
    let limits = rules.limits;
    let service = SyncService::with_admission(store, rules, bounds.admission.clone());
    let compaction = compaction.map(|c| spawn_compaction(service.clone(), c));
    let auth = Arc::new(JwtAuth::new(secret.as_bytes()));
    let service: Arc<dyn Tenancy> = Arc::new(service);
    let config = ServerConfig { limits, body_timeout: bounds.body_timeout };
    let app = router(Arc::clone(&service), auth.clone(), config);
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let grpc_listener = match grpc {
        Some(at) => {
            Some(tokio::net::TcpListener::bind(at).await.with_context(|| format!("cannot listen for gRPC on {at}"))?)
        }
        None => None,
    };
    let (stop, stopped) = watch::channel(false);
    let stopped_signal = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let task =
        tokio::spawn(converge_http::server::serve_with(listener, app, stopped_signal(stopped.clone()), bounds.conn));
    let (grpc_addr, grpc_task) = match grpc_listener {
        Some(listener) => {
            let grpc_addr = listener.local_addr()?;
            let routes = converge_grpc::server::routes(service, auth, converge_grpc::ServerConfig { limits }).await?;
            let limits = converge_grpc::server::ConnLimits {
                idle_timeout: bounds.conn.idle_timeout,
                max_connections: bounds.conn.max_connections,
            };
            let task =
                tokio::spawn(converge_grpc::server::serve_with(listener, routes, stopped_signal(stopped), limits));
            (Some(grpc_addr), Some(task))
        }
        None => (None, None),
    };
    Ok(RunningServer { addr, grpc_addr, stop: Some(stop), task, grpc_task, compaction })
}

/// Compacts now and then every `c.every`. A failure is logged and the next run tries again; it
/// never stops the server.
fn spawn_compaction(service: SyncService, c: Compaction) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(c.every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(e) = service.compact(c.retention).await {
                tracing::warn!(
                    error = %e.report(),
                    retry_in_s = c.every.as_secs(),
                    "compaction failed; trying again at the next interval"
                );
            }
        }
    })
}

/// Refuses the development secret on an address beyond loopback: anyone who can reach the
/// server could mint a token for any tenant with it.
fn check_exposure(given: Option<&str>, listen: SocketAddr, grpc: Option<SocketAddr>) -> Result<()> {
    if given.is_some_and(|s| !s.is_empty()) {
        return Ok(());
    }
    if let Some(open) = std::iter::once(listen).chain(grpc).find(|a| !a.ip().is_loopback()) {
        bail!(
            "{open} is reachable beyond this machine, and no token secret is set: with the development secret \
             anyone could mint a token for any tenant. Set one with --jwt-secret or CONVERGE_JWT_SECRET (for \
             example: export CONVERGE_JWT_SECRET=$(openssl rand -hex 32)), or listen on 127.0.0.1"
        );
    }
    Ok(())
}

pub(crate) async fn run(args: ServeArgs) -> Result<()> {
    check_exposure(args.jwt_secret.as_deref(), args.listen, args.grpc_listen.0)?;
    let secret = secret(args.jwt_secret, true);
    let limits = Limits {
        max_batch: args.max_batch,
        max_body_bytes: args.max_body_bytes,
        max_record_bytes: args.max_record_bytes,
    };
    let rules = Rules { limits, pins: args.pins.into_iter().collect() };
    if args.retention < MIN_SAFE_RETENTION {
        eprintln!("warning: --retention is under 24h: a batch retried later than that runs again as a new one");
    }
    let compaction = Compaction { retention: args.retention, every: args.compact_every };
    let pg = PgOptions { pool_size: args.pg_pool, ..PgOptions::default() };
    let (store, described) = open_store(&dbs(args.db), &pg).await?;
    let bounds = Bounds {
        conn: converge_http::server::ConnLimits {
            header_timeout: args.header_timeout,
            idle_timeout: args.idle_timeout,
            max_connections: args.max_connections.max(1),
        },
        body_timeout: args.body_timeout,
        admission: AdmissionConfig {
            max_inflight: args.max_inflight,
            max_inflight_per_tenant: args.max_inflight_per_tenant,
            rate: args.rate.filter(|r| *r > 0.0),
            critical: args.critical.into_iter().filter(|c| !c.is_empty()).collect(),
        },
    };
    let server = start(store, args.listen, args.grpc_listen.0, &secret, rules, Some(compaction), bounds).await?;
    println!("converge server listening on {} (store: {described})", server.url());
    match server.grpc_url() {
        Some(url) => println!("gRPC listening on {url}"),
        None => println!("gRPC off"),
    }
    tracing::info!(
        addr = %server.addr,
        grpc_addr = ?server.grpc_addr,
        retention_s = args.retention.as_secs(),
        compact_every_s = args.compact_every.as_secs(),
        "listening"
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.stop().await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Options of `converge shards`.
#[derive(Args)]
pub(crate) struct ShardsArgs {
    /// The shards' PostgreSQL URLs, as given to `converge serve` (repeat --db). Default:
    /// CONVERGE_DB.
    #[arg(long = "db")]
    db: Vec<String>,
    /// A tenant to locate (repeatable).
    #[arg(long = "tenant")]
    tenants: Vec<String>,
}

/// `converge shards`: each shard's id and tenant count, and where the tenants asked for live.
pub(crate) async fn shards(args: ShardsArgs) -> Result<()> {
    let dbs = dbs(args.db);
    if let Some(file) = dbs.iter().find(|db| !is_postgres(db)) {
        bail!("{file:?} is not a PostgreSQL URL: give the shards' URLs with --db (or CONVERGE_DB)");
    }
    let store = ShardedStore::connect(&dbs, &PgOptions { pool_size: 2, ..PgOptions::default() }).await?;
    for ((id, shard), url) in store.ids().iter().zip(store.shards()).zip(&dbs) {
        println!("shard {id}  {}  {} tenants", redact(url), shard.tenants().await?.len());
    }
    for tenant in &args.tenants {
        let p = store.locate(tenant).await?;
        let url = redact(&dbs[p.index]);
        if p.holds {
            println!("tenant {tenant}: shard {} ({url})", p.shard);
        } else {
            println!("tenant {tenant}: no rows yet; its first push goes to shard {} ({url})", p.shard);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_development_secret_is_for_loopback_only() {
        let local: std::net::SocketAddr = "127.0.0.1:7878".parse().unwrap();
        let any: std::net::SocketAddr = "0.0.0.0:7878".parse().unwrap();
        let v6_local: std::net::SocketAddr = "[::1]:7879".parse().unwrap();
        assert!(super::check_exposure(None, local, Some(v6_local)).is_ok());
        let err = super::check_exposure(None, any, None).unwrap_err().to_string();
        assert!(err.contains("0.0.0.0:7878") && err.contains("CONVERGE_JWT_SECRET"), "{err}");
        assert!(super::check_exposure(Some(""), local, Some(any)).is_err(), "gRPC counts too; an empty secret is none");
        assert!(super::check_exposure(Some("s3cret"), any, Some(any)).is_ok());
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(super::redact("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(super::redact("postgres://h/db"), "postgres://h/db");
        assert_eq!(super::redact("server.db"), "server.db");
    }

    #[test]
    fn retention_and_interval_must_be_positive() {
        assert_eq!(super::positive_duration("30d").unwrap().as_secs(), 30 * 86_400);
        assert_eq!(super::positive_duration("1s").unwrap().as_secs(), 1);
        assert!(super::positive_duration("0").unwrap_err().contains("at least 1s"));
        assert!(super::positive_duration("0h").is_err());
        assert!(super::positive_duration("off").is_err());
    }
}
