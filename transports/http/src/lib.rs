//! Converge over HTTP JSON, wire contract v1 (see the design's "Wire contract" section).
//!
//! Two adapters around `converge_core::SyncApi`, each behind a feature:
//!
//! - `server`: [`server::router`] serves any [`converge_core::Tenancy`] with bearer auth, the
//!   `Idempotency-Key` header, body limits, problem+json errors, Prometheus metrics and an
//!   OpenAPI 3.1 document; [`server::serve`] runs it on a listener.
//! - `client`: [`client::HttpClient`] implements `SyncApi` by calling a server, and sorts every
//!   failure into the classes the sync worker relies on (offline, API error with code, fatal).
//!
//! The [`problem`] module (the RFC 9457 body and header names) is shared by both.

pub mod error;
pub mod problem;

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "server")]
pub mod server;

pub use error::{Error, Result};
pub use problem::Problem;

#[cfg(feature = "client")]
pub use client::{ClientConfig, HttpClient};
#[cfg(feature = "server")]
pub use server::{ServerConfig, router, serve};
