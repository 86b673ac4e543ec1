//! The harness's errors: a cases file that cannot be read or does not follow the format.
//!
//! A format error names the JSON path of the offending value (`$.cases[2].local_hlc`), so a
//! long file is fixed without hunting.

use std::path::PathBuf;

/// Why a cases file was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {}: {io}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said (part of the message, so not also a `source`).
        io: std::io::Error,
    },
    /// The text is not JSON (serde_json's message, with line and column).
    #[error("not valid JSON: {0}")]
    Json(String),
    /// A value does not follow the cases format.
    #[error("{path}: {message}")]
    Invalid {
        /// The JSON path of the value, e.g. `$.cases[2].local_hlc`.
        path: String,
        /// What is wrong and what was expected.
        message: String,
    },
    /// An error in the named file.
    #[error("{}: {inner}", file.display())]
    InFile {
        /// The cases file.
        file: PathBuf,
        /// The error.
        inner: Box<Error>,
    },
}

/// The harness's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
