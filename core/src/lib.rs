//! Converge core: the data model, the protocol and store traits, the conflict checks, and the
//! client engine. No network, no SQL driver and no wasm runtime enter this crate.
//!
//! Features: `openapi` derives OpenAPI schemas for the wire types (used by `converge-http`);
//! `crash-points` arms the kill -9 test points of [`crash`].

pub mod api;
pub mod check;
pub mod crash;
pub mod engine;
pub mod error;
pub mod hlc;
pub mod model;
pub mod policy;
pub mod server_store;
pub mod store;
pub mod wire;

#[cfg(test)]
mod pattern_tests;

pub use api::{Access, AuthProvider, Authenticator, Scope, StaticToken, Subscription, SyncApi, Tenancy};
pub use engine::{
    Choice, Engine, EngineBuilder, EngineConfig, Metrics, MetricsReport, Notices, Phase, Priority, RecordChange,
    RecordState, RecordView, SyncReport, SyncStatus, WorkerConfig, WorkerHandle,
};
pub use error::{ApiError, BoxError, Code, Error, ErrorClass, ErrorKind, Result};
pub use hlc::{Clock, Hlc, HlcClock, IdSource, SystemClock, V7Ids};
pub use model::{CheckMode, Fields, Op, Version};
pub use policy::{MergeInput, MergePolicy, Resolution, ReviewPolicy};
pub use store::{LocalStore, StoreRead, StoreTx};
pub use wire::{Change, Limits, Mutation, Notice, PullRequest, PullResponse, PushBatch, PushRequest, PushResponse};
