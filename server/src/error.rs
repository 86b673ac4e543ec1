//! Errors of the server crate, and their one mapping to [`converge_core::Error`].
//!
//! Messages name what failed, never record contents: a JSON error keeps only its category and
//! position, not the text serde would quote.

/// The server crate's error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SQLite store failed.
    #[cfg(feature = "sqlite")]
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A schema migration failed.
    #[cfg(feature = "sqlite")]
    #[error("schema migration: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    /// PostgreSQL failed (the driver's error: a SQLSTATE code and message, never parameters).
    #[cfg(feature = "postgres")]
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// No PostgreSQL connection could be had from the pool in time.
    #[cfg(feature = "postgres")]
    #[error("postgres pool: {0}")]
    Pool(String),
    /// A PostgreSQL schema migration failed.
    #[cfg(feature = "postgres")]
    #[error("postgres schema migration: {0}")]
    PgMigration(#[from] refinery::Error),
    /// A tenant has rows on several shards (copied by hand?): it is not served half.
    #[cfg(feature = "postgres")]
    #[error("a tenant has rows on several shards: {0:?}")]
    TenantSplit(Vec<uuid::Uuid>),
    /// The database was written by a newer build; it is left untouched.
    #[error("the database schema is version {found}, newer than the {known} this build knows")]
    SchemaTooNew {
        /// The schema version found in the file.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },
    /// Stored or outgoing JSON could not be (de)serialized (said without the values).
    #[error("{0}")]
    Json(String),
    /// A number outside what the store can hold (e.g. a sequence over `i64::MAX`).
    #[error("number out of range: {0}")]
    OutOfRange(&'static str),
    /// A stored value that does not parse (the column is named, not the value).
    #[error("corrupt stored value in {0}")]
    Corrupt(&'static str),
    /// A feed position beyond the tenant's current change sequence: the client's cursor came from
    /// another copy of this data (e.g. before a restore from backup), so it must re-sync.
    #[error("the cursor is ahead of the change feed")]
    CursorAhead,
    /// A token could not be made.
    #[error("token: {0}")]
    Token(#[from] jsonwebtoken::errors::Error),
    /// The caller passed something the server cannot accept.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A blocking task panicked or was cancelled.
    #[error("background task failed: {0}")]
    Task(String),
}

/// The server crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(feature = "sqlite")]
impl From<converge_sqlite_support::Error> for Error {
    fn from(e: converge_sqlite_support::Error) -> Self {
        match e {
            converge_sqlite_support::Error::Sqlite(e) => Error::Sqlite(e),
            converge_sqlite_support::Error::Io(e) => Error::Task(format!("cannot start the checkpointer: {e}")),
        }
    }
}

#[cfg(feature = "postgres")]
impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => Error::Postgres(e),
            other => Error::Pool(other.to_string()),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Json(converge_core::model::json_error_without_values(&e))
    }
}

impl Error {
    /// Whether trying again later may succeed: SQLite busy or locked; PostgreSQL unreachable,
    /// restarting, out of connections, or a serialization failure or deadlock.
    pub fn is_retryable(&self) -> bool {
        match self {
            #[cfg(feature = "postgres")]
            Error::Postgres(e) => crate::postgres::is_retryable(e),
            #[cfg(feature = "postgres")]
            Error::Pool(_) => true,
            #[cfg(feature = "sqlite")]
            Error::Sqlite(e) => matches!(
                e.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            ),
            _ => false,
        }
    }
}

impl From<Error> for converge_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidInput(detail) => converge_core::Error::InvalidInput(detail),
            Error::CursorAhead => converge_core::ApiError::new(
                converge_core::Code::CursorExpired,
                "the cursor is ahead of this server's change feed; re-sync from the start",
            )
            .into(),
            e => {
                let detail = if e.is_retryable() {
                    "the server store is busy or unreachable"
                } else {
                    "the server store failed"
                };
                converge_core::Error::store_from(detail, e.is_retryable(), e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_can_cross_threads_into_anyhow() {
        fn check<T: std::error::Error + Send + Sync + 'static>() {}
        check::<Error>();
    }

    #[test]
    fn json_errors_do_not_quote_contents() {
        let e: Error = serde_json::from_str::<u32>("\"secret-value\"").unwrap_err().into();
        let text = e.to_string();
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("data"), "{text}");
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn busy_is_retryable_and_maps_to_a_retryable_store_error() {
        let busy =
            Error::Sqlite(rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None));
        assert!(busy.is_retryable());
        let core: converge_core::Error = busy.into();
        assert!(matches!(core, converge_core::Error::Store { retryable: true, .. }));
        let other: converge_core::Error = Error::OutOfRange("seq").into();
        assert!(matches!(other, converge_core::Error::Store { retryable: false, .. }));
    }
}
