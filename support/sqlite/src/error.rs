//! Errors of starting the checkpointer.

/// What can go wrong starting a checkpointer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening or configuring its connection failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// Its thread could not be started.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
