//! The Converge sync server: the sync service (idempotent mutation intake, change feed, records),
//! bearer-token authentication, and the server stores.
//!
//! - [`SyncService`] implements [`converge_core::Tenancy`]: transports authenticate a request
//!   with [`JwtAuth`] (a [`converge_core::Authenticator`]), then call the
//!   [`converge_core::SyncApi`] scoped to the caller's tenant and user.
//! - The service keeps its data in any [`converge_core::server_store::ServerStore`];
//!   [`SqliteServerStore`] is the embedded default.
//!
//! - Live change notices ([`converge_core::SyncApi::subscribe`]): a push that changes a
//!   tenant's feed wakes that tenant's subscriptions in this process (see [`notices`]).
//!
//! Features: `sqlite` (default) builds [`SqliteServerStore`] on `rusqlite`; `postgres` builds
//! `PgServerStore` on `tokio-postgres` with a `deadpool-postgres` pool, for several server nodes
//! on one database and tenants spread over several databases (shards).

mod admission;
pub mod auth;
mod cursor;
pub mod error;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod meta;
pub mod notices;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod service;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod stats;

pub use admission::AdmissionConfig;
pub use auth::{Claims, JwtAuth};
pub use error::{Error, Result};
#[cfg(feature = "postgres")]
pub use postgres::{PgOptions, PgServerStore, ShardedStore};
pub use service::{ScopedSync, SyncService};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteServerStore;
pub use stats::TenantStats;
