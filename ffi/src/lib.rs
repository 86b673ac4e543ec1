//! Converge for Swift (iOS) and other foreign languages, through UniFFI (proc-macro style).
//!
//! One object, [`ConvergeClient`]: open a device store with a server URL of either transport and
//! a [`TokenProvider`]; write, read and list records (JSON text plus typed metadata); settle
//! conflicts; retry or discard held ops; keep the store encrypted (`encryption_key`,
//! [`rekey_store`]); run the sync worker; hear the status and record changes
//! through listeners that return a [`ListenerHandle`]. Every error is a [`ConvergeError`] whose
//! variant is its class and whose `code` is stable; nothing panics across the boundary.
//!
//! The bindings are generated from this crate's library (`libconverge_ffi`) by
//! `tools/uniffi-bindgen`; the Swift ones are committed under `ffi/swift/`.

mod auth;
mod client;
pub mod error;
mod listen;
mod types;

pub use auth::TokenProvider;
pub use client::{ConvergeClient, rekey_store};
pub use error::{ConvergeError, Result, TokenError};
pub use listen::{ListenerHandle, RecordListener, StatusListener};
pub use types::{
    ClientOptions, Conflict, HeldOp, Notices, Phase, Progress, Record, RecordState, Resolution, StatusError,
    SyncReport, SyncStatus,
};

uniffi::setup_scaffolding!();
