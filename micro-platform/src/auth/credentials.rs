//! A service's own credentials: its account id and secret exchanged with the auth service
//! for access tokens ([`AccountTokens`]), and [`credentials_from_env`] choosing what a
//! service sends from its configuration.

use std::{
    fmt,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use micro_core::{
    Client,
    auth::{Credentials, CredentialsError, DEFAULT_REFRESH_MARGIN, ENV_TOKEN, TokenSource},
};
use tokio::sync::Mutex;

use super::{AuthClient, TokenGrant};

/// The environment variable holding a service account's id, for [`credentials_from_env`].
pub const ENV_ID: &str = "MICRO_AUTH_ID";

/// The environment variable holding a service account's secret, for [`credentials_from_env`].
pub const ENV_SECRET: &str = "MICRO_AUTH_SECRET";

/// A [`TokenSource`] exchanging a service account's id and secret for access tokens with the
/// auth service (the `client_credentials` grant), and asking again before the current token
/// expires: when less than a fifth of its lifetime or less than [`DEFAULT_REFRESH_MARGIN`]
/// remains (whichever is more, but never more than half the lifetime). Concurrent calls
/// share one token and one request; a failed request fails the calls waiting for it (they
/// are not sent, `UNAUTHENTICATED`) and the next call asks again.
pub struct AccountTokens {
    client: AuthClient,
    id: String,
    secret: String,
    scopes: Vec<String>,
    current: Mutex<Option<(String, Instant)>>,
}

impl AccountTokens {
    /// Tokens for the account `id` with `secret`, from the auth service behind `client`.
    pub fn new(client: AuthClient, id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            client,
            id: id.into(),
            secret: secret.into(),
            scopes: Vec::new(),
            current: Mutex::new(None),
        }
    }

    /// Limits the tokens to these scopes (a subset of the account's). Default: all of them.
    #[must_use]
    pub fn with_scopes(mut self, scopes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }
}

impl fmt::Debug for AccountTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountTokens")
            .field("id", &self.id)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// When a token valid for `lifetime` from `issued` should be replaced.
fn refresh_at(issued: Instant, lifetime: Duration) -> Instant {
    let margin = (lifetime / 5).max(DEFAULT_REFRESH_MARGIN).min(lifetime / 2);
    issued + lifetime.saturating_sub(margin)
}

#[async_trait]
impl TokenSource for AccountTokens {
    async fn token(&self) -> Result<String, CredentialsError> {
        let mut current = self.current.lock().await;
        if let Some((token, refresh)) = current.as_ref()
            && Instant::now() < *refresh
        {
            return Ok(token.clone());
        }
        let asked = Instant::now();
        let grant = TokenGrant::ClientCredentials {
            id: self.id.clone(),
            secret: self.secret.clone(),
        };
        let tokens = self
            .client
            .token(grant, &self.scopes)
            .await
            .map_err(|status| {
                tracing::warn!(account = %self.id, code = ?status.code(), message = status.message(), "auth: no access token from the auth service");
                CredentialsError::Other(format!(
                    "the auth service refused a token for account {}: {}",
                    self.id,
                    status.message()
                ))
            })?;
        tracing::debug!(account = %self.id, expires_in = ?tokens.expires_in, "auth: new access token");
        *current = Some((
            tokens.access_token.clone(),
            refresh_at(asked, tokens.expires_in),
        ));
        Ok(tokens.access_token)
    }
}

/// A service's credentials from its environment, for `Credentials` on its clients:
///
/// - `MICRO_AUTH_TOKEN` set: that fixed token;
/// - else `MICRO_AUTH_ID` and `MICRO_AUTH_SECRET` set: [`AccountTokens`] for that account,
///   from the auth service found through `client`'s registry;
/// - else `None`: calls go without a token (anonymous).
///
/// Empty values count as unset.
pub fn credentials_from_env(client: &Client) -> Option<Credentials> {
    let var = |name: &str| {
        std::env::var(name)
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    if var(ENV_TOKEN).is_some() {
        return Credentials::from_env();
    }
    let (id, secret) = (var(ENV_ID)?, var(ENV_SECRET)?);
    let source = AccountTokens::new(AuthClient::from_client(client), id, secret);
    Some(Credentials::new(std::sync::Arc::new(source)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_before_expiry() {
        let now = Instant::now();
        // 15 min: a fifth (3 min) before the end.
        assert_eq!(
            refresh_at(now, Duration::from_secs(900)),
            now + Duration::from_secs(720)
        );
        // 2 min: the 60 s margin.
        assert_eq!(
            refresh_at(now, Duration::from_secs(120)),
            now + Duration::from_secs(60)
        );
        // 10 s: never more than half.
        assert_eq!(
            refresh_at(now, Duration::from_secs(10)),
            now + Duration::from_secs(5)
        );
        assert_eq!(refresh_at(now, Duration::ZERO), now);
    }
}
