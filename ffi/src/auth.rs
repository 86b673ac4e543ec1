//! The app's token provider, seen by the engine as its `AuthProvider`.

use std::sync::Arc;

use async_trait::async_trait;
use converge_core::{ApiError, AuthProvider, Code};

use crate::error::TokenError;

/// Gives the client its bearer tokens. Both methods are called on a background thread (never
/// the main thread) and may block, e.g. to refresh over the network; keep them synchronous.
#[uniffi::export(with_foreign)]
pub trait TokenProvider: Send + Sync {
    /// The token to send now (a cached one is fine).
    fn token(&self) -> Result<String, TokenError>;
    /// A new token: the server refused the last one. `SignInRequired` leaves sync waiting in
    /// `needs_auth` until the app signs the user in and calls `auth_changed`.
    fn refresh(&self) -> Result<String, TokenError>;
}

/// The provider as the engine and the transports call it: each call on tokio's blocking pool.
pub(crate) struct ForeignAuth(pub(crate) Arc<dyn TokenProvider>);

impl ForeignAuth {
    async fn ask(&self, refresh: bool) -> converge_core::Result<String> {
        let provider = self.0.clone();
        let answer = tokio::task::spawn_blocking(move || if refresh { provider.refresh() } else { provider.token() })
            .await
            .map_err(|e| converge_core::Error::fatal_from("the token provider's call failed", e))?;
        answer.map_err(|e| match e {
            TokenError::Unavailable { message } => converge_core::Error::offline(format!("no token: {message}")),
            TokenError::SignInRequired { message } => ApiError::new(Code::Unauthorized, message).into(),
        })
    }
}

#[async_trait]
impl AuthProvider for ForeignAuth {
    async fn token(&self) -> converge_core::Result<String> {
        self.ask(false).await
    }

    async fn refresh(&self) -> converge_core::Result<String> {
        self.ask(true).await
    }
}
