//! Converge over gRPC, wire contract v1 (the design's "Wire contract (gRPC, v1)"; the proto is
//! `proto/converge/v1/sync.proto`, compiled at build time by protox, no `protoc`).
//!
//! Two adapters around `converge_core::SyncApi`, each behind a feature, like `converge-http`:
//!
//! - `server`: [`server::routes`] serves any [`converge_core::Tenancy`] with bearer auth, the
//!   `idempotency-key` metadata, message limits and statuses carrying `google.rpc.ErrorInfo`
//!   and `RetryInfo`, beside the standard health and reflection services; [`server::serve`]
//!   runs them on a listener.
//! - `client`: [`client::GrpcClient`] implements `SyncApi` by calling a server, and sorts every
//!   failure into the classes the sync worker relies on.

mod convert;
pub mod error;
pub mod status;

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "server")]
pub mod server;

pub use error::{Error, Result};

#[cfg(feature = "client")]
pub use client::{ClientConfig, GrpcClient};
#[cfg(feature = "server")]
pub use server::{ServerConfig, routes, serve};

/// The metadata names of the contract, shared by both adapters.
pub mod metadata {
    /// The request metadata that names a push.
    pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
    /// The response metadata of a replayed push.
    pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
}

/// The messages and service generated from `proto/converge/v1/sync.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("converge.v1");

    /// The encoded file descriptor set of the proto, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/converge_v1_descriptor.bin"));
}
