//! SQLite plumbing shared by Converge's device store (`converge-sqlite`) and server store
//! (`converge-server`): a background checkpointer that keeps WAL checkpoints off the write path
//! and the log small, and a busy handler that waits in small steps.

mod checkpoint;
mod error;

pub use checkpoint::{Checkpointer, WalOptions, busy, data_version, log_salt, page_size};
pub use error::{Error, Result};
