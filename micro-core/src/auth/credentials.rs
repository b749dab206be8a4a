//! [`Credentials`]: the client side of auth, attaching the caller's bearer token to every
//! outgoing call.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use http::{HeaderValue, Request, header::AUTHORIZATION};
use tower::Layer;
use tower_service::Service;

use super::{
    jwks::KeyError,
    rules::Account,
    token::{Issuer, unix},
};
use crate::lock::lock;

/// The environment variable [`Credentials::from_env`] reads a service's token from.
pub const ENV_TOKEN: &str = "MICRO_AUTH_TOKEN";

/// The shortest time before expiry at which [`IssuerSource`] mints a new token. Default 60 s.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(60);

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a [`TokenSource`] has no token to give.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The issuer could not sign a token.
    #[error("cannot mint an access token: {0}")]
    Mint(#[from] KeyError),
    /// The token cannot be sent as an HTTP header value.
    #[error("the access token is not a valid header value (visible ASCII only)")]
    InvalidToken,
    /// Another failure of a custom source.
    #[error("no access token: {0}")]
    Other(String),
}

/// Where a client's access tokens come from.
#[async_trait]
pub trait TokenSource: Send + Sync + fmt::Debug {
    /// The token to send with the next call. Called once per call: cache inside.
    ///
    /// # Errors
    /// When no token can be had; the call then fails with `UNAUTHENTICATED` without being
    /// sent.
    async fn token(&self) -> Result<String, CredentialsError>;
}

/// A fixed token, e.g. from configuration ([`Credentials::from_env`]).
#[derive(Clone)]
pub struct StaticToken {
    token: Arc<str>,
}

impl StaticToken {
    /// A source always giving `token`.
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: token.into().into(),
        }
    }
}

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token itself.
        f.debug_struct("StaticToken").finish_non_exhaustive()
    }
}

#[async_trait]
impl TokenSource for StaticToken {
    async fn token(&self) -> Result<String, CredentialsError> {
        Ok(self.token.to_string())
    }
}

/// Mints tokens for an account with an [`Issuer`] and mints a new one before the current
/// expires: when less than a fifth of its lifetime or less than
/// [`DEFAULT_REFRESH_MARGIN`] remains (whichever is more, but never more than half the
/// lifetime). Concurrent calls share one token and one refresh (minting happens under a
/// lock; it is a local signature, no I/O).
pub struct IssuerSource {
    issuer: Issuer,
    account: Account,
    clock: Arc<dyn Fn() -> SystemTime + Send + Sync>,
    current: Mutex<Option<Minted>>,
}

#[derive(Clone)]
struct Minted {
    token: String,
    refresh_at: i64,
}

impl IssuerSource {
    /// Tokens for `account` from `issuer`, on the system clock.
    pub fn new(issuer: Issuer, account: Account) -> Self {
        Self {
            issuer,
            account,
            clock: Arc::new(SystemTime::now),
            current: Mutex::new(None),
        }
    }

    /// Reads the time from `clock` instead of the system clock (for tests). Default is
    /// `SystemTime::now`.
    #[must_use]
    pub fn with_clock(mut self, clock: impl Fn() -> SystemTime + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    fn current(&self) -> Result<String, CredentialsError> {
        let now = (self.clock)();
        let mut current = lock(&self.current);
        if let Some(minted) = current.as_ref()
            && unix(now) < minted.refresh_at
        {
            return Ok(minted.token.clone());
        }
        let token = self.issuer.issue_at(&self.account, now)?;
        let issued = token.claims.iat.unwrap_or_else(|| unix(now));
        let lifetime = token.claims.exp.saturating_sub(issued).max(0);
        let margin = (lifetime / 5)
            .max(i64::try_from(DEFAULT_REFRESH_MARGIN.as_secs()).unwrap_or(i64::MAX))
            .min(lifetime / 2);
        tracing::debug!(account = %self.account.id, exp = token.claims.exp, "auth: minted an access token");
        *current = Some(Minted {
            token: token.token.clone(),
            refresh_at: token.claims.exp.saturating_sub(margin),
        });
        Ok(token.token)
    }
}

impl fmt::Debug for IssuerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuerSource")
            .field("account", &self.account.id)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl TokenSource for IssuerSource {
    async fn token(&self) -> Result<String, CredentialsError> {
        self.current()
    }
}

/// A client layer adding `authorization: Bearer <token>` from a [`TokenSource`] to every
/// request. Use it on a micro client channel or a tonic `Channel`:
///
/// ```
/// use micro_core::auth::Credentials;
///
/// let credentials = Credentials::static_token("eyJ…");
/// // tower::ServiceBuilder::new().layer(credentials).service(client.channel("greeter"))
/// # let _ = credentials;
/// ```
///
/// A call whose source fails is not sent: it fails with `UNAUTHENTICATED` (a boxed
/// [`tonic::Status`]). The service's errors are boxed.
#[derive(Clone, Debug)]
pub struct Credentials {
    source: Arc<dyn TokenSource>,
}

impl Credentials {
    /// Credentials from any source.
    pub fn new(source: Arc<dyn TokenSource>) -> Self {
        Self { source }
    }

    /// A fixed token.
    pub fn static_token(token: impl Into<String>) -> Self {
        Self::new(Arc::new(StaticToken::new(token)))
    }

    /// Tokens minted for `account` by `issuer`, refreshed before expiry ([`IssuerSource`]).
    pub fn issuer(issuer: Issuer, account: Account) -> Self {
        Self::new(Arc::new(IssuerSource::new(issuer, account)))
    }

    /// A service's own credentials from its environment: the token in `MICRO_AUTH_TOKEN`
    /// ([`ENV_TOKEN`]), or `None` when the variable is unset or empty. (Exchanging an
    /// account's secret with the auth service for tokens comes later.)
    pub fn from_env() -> Option<Self> {
        Self::from_var(std::env::var(ENV_TOKEN).ok())
    }

    fn from_var(value: Option<String>) -> Option<Self> {
        let value = value?;
        let token = value.trim();
        (!token.is_empty()).then(|| Self::static_token(token))
    }

    /// The token source.
    pub fn source(&self) -> &Arc<dyn TokenSource> {
        &self.source
    }
}

impl<S> Layer<S> for Credentials {
    type Service = WithCredentials<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithCredentials {
            inner,
            source: self.source.clone(),
        }
    }
}

/// The service made by [`Credentials`].
#[derive(Clone, Debug)]
pub struct WithCredentials<S> {
    inner: S,
    source: Arc<dyn TokenSource>,
}

impl<S, B> Service<Request<B>> for WithCredentials<S>
where
    S: Service<Request<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The ready service goes with the future; a clone stays for the next call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let source = self.source.clone();
        Box::pin(async move {
            let token = source.token().await.map_err(|error| -> BoxError {
                Box::new(tonic::Status::unauthenticated(error.to_string()))
            })?;
            let value =
                HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| -> BoxError {
                    Box::new(tonic::Status::unauthenticated(
                        CredentialsError::InvalidToken.to_string(),
                    ))
                })?;
            let mut value = value;
            value.set_sensitive(true);
            request.headers_mut().insert(AUTHORIZATION, value);
            inner.call(request).await.map_err(Into::into)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn from_env_value() {
        assert!(Credentials::from_var(None).is_none());
        assert!(Credentials::from_var(Some("  ".into())).is_none());
        let credentials = Credentials::from_var(Some(" abc \n".into()));
        let token = credentials.map(|c| c.source.clone());
        assert_eq!(token.unwrap().token().await.unwrap(), "abc");
    }
}
