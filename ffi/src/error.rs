//! The errors that cross the boundary: one enum whose variant is the class the app acts on.

use converge_core::ErrorClass;

/// An error from the client, by what the app should do about it. `code` is the wire contract's
/// code when the server gave one (`token_expired`, `rate_limited`, ...), or one of the local
/// codes: `invalid_input` (the app's call was wrong: bad JSON, a bad entity name, an unknown
/// id), `not_found`, `unsupported`, `store` (the device's database), `store_full`, `offline`,
/// `wrong_key`, `key_required`, `bad_key` (the store's encryption key), `closed` (the client
/// was closed), `internal`. `message` never holds record contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum ConvergeError {
    /// Retrying later may work (offline, the server busy, the disk full); sync retries by itself.
    #[error("{message}")]
    Retryable {
        /// The stable code.
        code: String,
        /// What happened.
        message: String,
    },
    /// The user must sign in again; nothing is dropped meanwhile.
    #[error("{message}")]
    Unauthorized {
        /// The stable code.
        code: String,
        /// What happened.
        message: String,
    },
    /// The request was wrong and will be refused again as it is.
    #[error("{message}")]
    Rejected {
        /// The stable code.
        code: String,
        /// What happened.
        message: String,
    },
    /// Something is broken that retrying will not fix.
    #[error("{message}")]
    Fatal {
        /// The stable code.
        code: String,
        /// What happened.
        message: String,
    },
}

/// The local code of a core error without a wire code.
fn local_code(e: &converge_core::Error) -> &'static str {
    use converge_core::Error as E;
    match e {
        E::Api(api) => api.code.as_str(),
        E::Offline { .. } => "offline",
        E::Store { .. } => "store",
        E::StoreFull(_) => "store_full",
        E::InvalidInput(_) => "invalid_input",
        E::NotFound { .. } => "not_found",
        E::Unsupported(_) => "unsupported",
        E::Fatal { .. } => "internal",
    }
}

impl From<converge_core::Error> for ConvergeError {
    fn from(e: converge_core::Error) -> ConvergeError {
        let code = local_code(&e).to_owned();
        let message = e.report();
        match e.class() {
            ErrorClass::Retryable => ConvergeError::Retryable { code, message },
            ErrorClass::Unauthorized => ConvergeError::Unauthorized { code, message },
            ErrorClass::Rejected => ConvergeError::Rejected { code, message },
            ErrorClass::Fatal => ConvergeError::Fatal { code, message },
        }
    }
}

impl From<converge_sqlite::Error> for ConvergeError {
    fn from(e: converge_sqlite::Error) -> ConvergeError {
        use converge_sqlite::Error as E;
        let code = match &e {
            E::WrongKey => "wrong_key",
            E::KeyRequired => "key_required",
            E::BadKey(_) => "bad_key",
            _ => return converge_core::Error::from(e).into(),
        };
        ConvergeError::Rejected { code: code.into(), message: e.to_string() }
    }
}

impl ConvergeError {
    /// The app's call was wrong.
    pub(crate) fn invalid(message: impl Into<String>) -> ConvergeError {
        ConvergeError::Rejected { code: "invalid_input".into(), message: message.into() }
    }

    /// The client was closed.
    pub(crate) fn closed() -> ConvergeError {
        ConvergeError::Fatal { code: "closed".into(), message: "the client is closed".into() }
    }

    /// Something inside failed (a task panicked, say).
    pub(crate) fn internal(message: impl Into<String>) -> ConvergeError {
        ConvergeError::Fatal { code: "internal".into(), message: message.into() }
    }
}

/// An error the app's [`crate::TokenProvider`] returns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
pub enum TokenError {
    /// No token now, but later may work (no network to refresh over): sync retries.
    #[error("{message}")]
    Unavailable {
        /// Why.
        message: String,
    },
    /// The user must sign in: sync waits in `needs_auth` until the app calls `auth_changed`.
    #[error("{message}")]
    SignInRequired {
        /// Why.
        message: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for TokenError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> TokenError {
        TokenError::Unavailable { message: format!("the token provider failed: {}", e.reason) }
    }
}

/// The result type of this crate.
pub type Result<T, E = ConvergeError> = std::result::Result<T, E>;
