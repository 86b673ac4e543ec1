//! Converge's device store: records, outbox, sync state and conflicts in one SQLite file (WAL),
//! implementing `converge_core::LocalStore`.

mod error;
mod key;
mod rows;
mod schema;
mod store;

pub use converge_sqlite_support::WalOptions;
pub use error::{Error, Result};
pub use key::{ENCRYPTION, Key};
pub use store::{Options, SqliteStore};
