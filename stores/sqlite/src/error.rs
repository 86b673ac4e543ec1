//! Errors of the SQLite device store, sorted by SQLite's result codes into core's classes. A
//! variant that wraps another error keeps it as its source and does not repeat it in its message.

use std::path::PathBuf;

/// What can go wrong in the device store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A SQLite call failed.
    #[error("a SQLite call failed")]
    Sqlite(#[from] rusqlite::Error),
    /// A schema migration failed.
    #[error("a schema migration failed")]
    Migration(#[from] rusqlite_migration::Error),
    /// The file was written by a newer version of Converge.
    #[error("the store's schema version {found} is newer than this build knows ({known}); upgrade the app")]
    TooNew {
        /// The schema version in the file.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// The file is not a usable database; it was moved aside, never deleted.
    #[error("the store file was corrupt ({reason}); it was moved to {moved_to} and a new store was not created")]
    Corrupt {
        /// What SQLite said.
        reason: String,
        /// Where the damaged file now is.
        moved_to: PathBuf,
    },
    /// A stored row could not be read back.
    #[error("a stored row is malformed: {0}")]
    Malformed(String),
    /// The key does not open this store: a wrong key, or the store is not encrypted. The file is
    /// left as it is.
    #[error("the key does not open this store (a wrong key, or the store is not encrypted); the file is left as it is")]
    WrongKey,
    /// The store is encrypted (it looks so: no SQLite header, random bytes) and no key was given.
    /// The file is left as it is.
    #[error(
        "the store is encrypted: open it with its key (if it is not encrypted, it is damaged; it is left as it is)"
    )]
    KeyRequired,
    /// The key given is unusable, or this build cannot encrypt.
    #[error("bad key: {0}")]
    BadKey(String),
    /// Filesystem trouble around the store file.
    #[error("file system trouble around the store file")]
    Io(#[from] std::io::Error),
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<converge_sqlite_support::Error> for Error {
    fn from(e: converge_sqlite_support::Error) -> Self {
        match e {
            converge_sqlite_support::Error::Sqlite(e) => Error::Sqlite(e),
            converge_sqlite_support::Error::Io(e) => Error::Io(e),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        // serde_json's own message quotes the offending value: a record's contents.
        Error::Malformed(converge_core::model::json_error_without_values(&e))
    }
}

impl From<Error> for converge_core::Error {
    fn from(e: Error) -> Self {
        use rusqlite::ErrorCode as C;
        if let Error::Sqlite(rusqlite::Error::SqliteFailure(f, _)) = &e
            && f.code == C::DiskFull
        {
            return converge_core::Error::StoreFull(e.to_string());
        }
        let retryable = matches!(
            &e,
            Error::Sqlite(rusqlite::Error::SqliteFailure(f, _))
                if matches!(f.code, C::DatabaseBusy | C::DatabaseLocked)
        );
        let detail = if retryable { "the device store is busy" } else { "the device store failed" };
        converge_core::Error::store_from(detail, retryable, e)
    }
}

/// Whether a SQLite error means the file itself is damaged.
pub(crate) fn is_corruption(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if matches!(f.code, rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase))
}
