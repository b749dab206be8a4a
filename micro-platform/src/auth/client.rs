//! [`AuthClient`]: calls the auth service with Rust types.

use std::{collections::BTreeMap, fmt, sync::Arc, time::Duration};

use micro_core::{
    Channel, Client,
    auth::{AccountKind, Rule},
};
use tonic::{Request, Status, metadata::MetadataValue};

use super::{
    SERVICE_NAME, grant,
    records::{RuleRecord, rule_to_proto},
};
use crate::proto::auth::v1::{self as pb, auth_client::AuthClient as Stub};

/// An account as the service lists it (never with its secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountInfo {
    /// The account id.
    pub id: String,
    /// User or service.
    pub kind: AccountKind,
    /// Scopes it holds.
    pub scopes: Vec<String>,
    /// Its metadata.
    pub metadata: BTreeMap<String, String>,
    /// When it was created, seconds since the Unix epoch.
    pub created: i64,
}

/// A new account's description, for [`AuthClient::generate`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewAccount {
    /// The account id.
    pub id: String,
    /// User or service.
    pub kind: AccountKind,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
    /// The secret to set (at least 16 bytes); `None`: the service generates one.
    pub secret: Option<String>,
}

/// What a token request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenGrant {
    /// A service account's id and secret (no refresh token).
    ClientCredentials {
        /// The account id.
        id: String,
        /// Its secret.
        secret: String,
    },
    /// A user account's id and secret (when the service enables it).
    Password {
        /// The account id.
        id: String,
        /// Its secret.
        secret: String,
    },
    /// A refresh token from an earlier grant.
    RefreshToken(String),
}

/// Tokens from [`AuthClient::token`].
#[derive(Clone, PartialEq, Eq)]
pub struct Tokens {
    /// The JWT access token.
    pub access_token: String,
    /// How long it is valid.
    pub expires_in: Duration,
    /// A refresh token (not for the client_credentials grant).
    pub refresh_token: Option<String>,
    /// The scopes the access token carries.
    pub scopes: Vec<String>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("expires_in", &self.expires_in)
            .field("refresh_token", &self.refresh_token.is_some())
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// What [`AuthClient::inspect`] says about an access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspection {
    /// The account it describes.
    pub account: AccountInfo,
    /// Its id (`jti`).
    pub token_id: String,
    /// Issued at, seconds since the Unix epoch.
    pub issued: i64,
    /// Expires at, seconds since the Unix epoch.
    pub expires: i64,
    /// Its issuer.
    pub issuer: String,
}

/// One current revocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revocation {
    /// One access token.
    Token {
        /// Its `jti`.
        id: String,
        /// When the entry can go, seconds since the epoch.
        expires: i64,
    },
    /// Every token of an account issued before a time.
    Account {
        /// The account id.
        id: String,
        /// Tokens issued before this (seconds since the epoch) are revoked.
        issued_before: i64,
        /// When the entry can go, seconds since the epoch.
        expires: i64,
    },
}

/// The service's published keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwksInfo {
    /// The JWK Set JSON.
    pub jwks: String,
    /// The key signing new tokens.
    pub current_kid: String,
    /// The tokens' `iss`.
    pub issuer: String,
    /// The tokens' `aud`.
    pub audience: String,
}

/// A client of the auth service over a micro [`Channel`] (retries of idempotent methods,
/// deadlines, tracing and metrics). Admin calls need a token with the rights the service's
/// rules demand: set it with [`AuthClient::with_token`].
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use micro_platform::auth::{AuthClient, TokenGrant};
///
/// let auth = AuthClient::connect("127.0.0.1:7700")?;
/// let tokens = auth
///     .token(TokenGrant::ClientCredentials { id: "billing".into(), secret: "…".into() }, &[])
///     .await?;
/// let admin = auth.with_token(tokens.access_token);
/// println!("{:?}", admin.list_accounts().await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AuthClient {
    stub: Stub<Channel>,
    token: Option<Arc<str>>,
}

impl fmt::Debug for AuthClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthClient")
            .field("token", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

impl AuthClient {
    /// A client over `channel`, a channel to the auth service.
    pub fn new(channel: Channel) -> Self {
        Self {
            stub: Stub::new(channel),
            token: None,
        }
    }

    /// A client finding the service as [`SERVICE_NAME`] through `client`'s registry.
    pub fn from_client(client: &Client) -> Self {
        Self::new(client.channel(SERVICE_NAME))
    }

    /// A client of the service at `address` (`host:port`), with no registry.
    ///
    /// # Errors
    /// INVALID_ARGUMENT when `address` is not `host:port`.
    pub fn connect(address: &str) -> Result<Self, Status> {
        let channel = crate::channel::at_address(SERVICE_NAME, &pb::AUTH_DESCRIPTOR, address)
            .map_err(Status::invalid_argument)?;
        Ok(Self::new(channel))
    }

    /// This client sending `authorization: Bearer <token>` with every call.
    #[must_use]
    pub fn with_token(&self, token: impl Into<String>) -> Self {
        Self {
            stub: self.stub.clone(),
            token: Some(Arc::from(token.into())),
        }
    }

    fn request<T>(&self, message: T) -> Result<Request<T>, Status> {
        let mut request = Request::new(message);
        if let Some(token) = &self.token {
            let value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
                Status::invalid_argument("the access token is not a valid header value")
            })?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }

    /// Creates an account; returns it with its secret (shown this once).
    ///
    /// # Errors
    /// INVALID_ARGUMENT (id, scope, secret), ALREADY_EXISTS, or the service's refusal.
    pub async fn generate(&self, account: NewAccount) -> Result<(AccountInfo, String), Status> {
        let request = self.request(pb::GenerateRequest {
            id: account.id,
            r#type: kind_to_proto(account.kind) as i32,
            scopes: account.scopes,
            metadata: account.metadata.into_iter().collect(),
            secret: account.secret.unwrap_or_default(),
        })?;
        let response = self.stub.clone().generate(request).await?.into_inner();
        let account = response
            .account
            .ok_or_else(|| Status::internal("the auth service answered without the account"))?;
        Ok((account_from_proto(account), response.secret))
    }

    /// Every account, by id.
    ///
    /// # Errors
    /// The service's status.
    pub async fn list_accounts(&self) -> Result<Vec<AccountInfo>, Status> {
        let request = self.request(pb::ListAccountsRequest {})?;
        let response = self.stub.clone().list_accounts(request).await?.into_inner();
        Ok(response
            .accounts
            .into_iter()
            .map(account_from_proto)
            .collect())
    }

    /// Deletes an account and revokes its tokens.
    ///
    /// # Errors
    /// NOT_FOUND, or the service's status.
    pub async fn delete_account(&self, id: &str) -> Result<(), Status> {
        let request = self.request(pb::DeleteAccountRequest { id: id.to_owned() })?;
        self.stub.clone().delete_account(request).await?;
        Ok(())
    }

    /// Replaces an account's secret (`None`: generated); returns the new one.
    ///
    /// # Errors
    /// NOT_FOUND, INVALID_ARGUMENT, or the service's status.
    pub async fn rotate_secret(&self, id: &str, secret: Option<&str>) -> Result<String, Status> {
        let request = self.request(pb::RotateSecretRequest {
            id: id.to_owned(),
            secret: secret.unwrap_or_default().to_owned(),
        })?;
        Ok(self
            .stub
            .clone()
            .rotate_secret(request)
            .await?
            .into_inner()
            .secret)
    }

    /// Tokens for `grant`, limited to `scopes` (empty: all the account holds).
    ///
    /// # Errors
    /// UNAUTHENTICATED, RESOURCE_EXHAUSTED (with `retry-after`), FAILED_PRECONDITION,
    /// INVALID_ARGUMENT; see the proto.
    pub async fn token(&self, grant: TokenGrant, scopes: &[String]) -> Result<Tokens, Status> {
        let mut message = pb::TokenRequest {
            scopes: scopes.to_vec(),
            ..Default::default()
        };
        match grant {
            TokenGrant::ClientCredentials { id, secret } => {
                message.grant_type = grant::CLIENT_CREDENTIALS.to_owned();
                message.id = id;
                message.secret = secret;
            }
            TokenGrant::Password { id, secret } => {
                message.grant_type = grant::PASSWORD.to_owned();
                message.id = id;
                message.secret = secret;
            }
            TokenGrant::RefreshToken(token) => {
                message.grant_type = grant::REFRESH_TOKEN.to_owned();
                message.refresh_token = token;
            }
        }
        let response = self.token_raw(message).await?;
        Ok(Tokens {
            access_token: response.access_token,
            expires_in: Duration::from_secs(u64::try_from(response.expires_in).unwrap_or(0)),
            refresh_token: Some(response.refresh_token).filter(|t| !t.is_empty()),
            scopes: response.scopes,
        })
    }

    /// The raw `Token` call, for callers forwarding OAuth2 requests as they are.
    ///
    /// # Errors
    /// As [`AuthClient::token`].
    pub async fn token_raw(&self, message: pb::TokenRequest) -> Result<pb::TokenResponse, Status> {
        let request = self.request(message)?;
        Ok(self.stub.clone().token(request).await?.into_inner())
    }

    /// Verifies an access token at the service.
    ///
    /// # Errors
    /// UNAUTHENTICATED for an invalid token, or the service's status.
    pub async fn inspect(&self, token: &str) -> Result<Inspection, Status> {
        let request = self.request(pb::InspectRequest {
            token: token.to_owned(),
        })?;
        let response = self.stub.clone().inspect(request).await?.into_inner();
        Ok(Inspection {
            account: account_from_proto(response.account.unwrap_or_default()),
            token_id: response.token_id,
            issued: response.issued,
            expires: response.expires,
            issuer: response.issuer,
        })
    }

    /// Revokes an access token or a refresh token.
    ///
    /// # Errors
    /// INVALID_ARGUMENT for a token the service did not issue, or the service's status.
    pub async fn revoke(&self, token: &str) -> Result<(), Status> {
        let request = self.request(pb::RevokeRequest {
            token: token.to_owned(),
            token_id: String::new(),
        })?;
        self.stub.clone().revoke(request).await?;
        Ok(())
    }

    /// Revokes an access token by its id (`jti`).
    ///
    /// # Errors
    /// The service's status.
    pub async fn revoke_id(&self, token_id: &str) -> Result<(), Status> {
        let request = self.request(pb::RevokeRequest {
            token: String::new(),
            token_id: token_id.to_owned(),
        })?;
        self.stub.clone().revoke(request).await?;
        Ok(())
    }

    /// The current revocations.
    ///
    /// # Errors
    /// The service's status.
    pub async fn list_revocations(&self) -> Result<Vec<Revocation>, Status> {
        let request = self.request(pb::ListRevocationsRequest {})?;
        let response = self
            .stub
            .clone()
            .list_revocations(request)
            .await?
            .into_inner();
        Ok(response
            .revocations
            .into_iter()
            .map(|r| {
                if r.token_id.is_empty() {
                    Revocation::Account {
                        id: r.account_id,
                        issued_before: r.issued_before,
                        expires: r.expires,
                    }
                } else {
                    Revocation::Token {
                        id: r.token_id,
                        expires: r.expires,
                    }
                }
            })
            .collect())
    }

    /// The published keys.
    ///
    /// # Errors
    /// The service's status.
    pub async fn jwks(&self) -> Result<JwksInfo, Status> {
        let request = self.request(pb::JwksRequest {})?;
        let response = self.stub.clone().jwks(request).await?.into_inner();
        Ok(JwksInfo {
            jwks: response.jwks,
            current_kid: response.current_kid,
            issuer: response.issuer,
            audience: response.audience,
        })
    }

    /// Makes a new signing key current; returns its kid and every published kid.
    ///
    /// # Errors
    /// The service's status.
    pub async fn rotate_keys(&self) -> Result<(String, Vec<String>), Status> {
        let request = self.request(pb::RotateKeysRequest {})?;
        let response = self.stub.clone().rotate_keys(request).await?.into_inner();
        Ok((response.current_kid, response.published_kids))
    }

    /// Adds a rule.
    ///
    /// # Errors
    /// INVALID_ARGUMENT naming the problem, ALREADY_EXISTS, or the service's status.
    pub async fn create_rule(&self, rule: &Rule) -> Result<(), Status> {
        let request = self.request(pb::CreateRuleRequest {
            rule: Some(rule_to_proto(rule)),
        })?;
        self.stub.clone().create_rule(request).await?;
        Ok(())
    }

    /// Deletes a rule.
    ///
    /// # Errors
    /// NOT_FOUND, or the service's status.
    pub async fn delete_rule(&self, id: &str) -> Result<(), Status> {
        let request = self.request(pb::DeleteRuleRequest { id: id.to_owned() })?;
        self.stub.clone().delete_rule(request).await?;
        Ok(())
    }

    /// The rules, in evaluation order.
    ///
    /// # Errors
    /// The service's status.
    pub async fn list_rules(&self) -> Result<Vec<Rule>, Status> {
        let request = self.request(pb::ListRulesRequest {})?;
        let response = self.stub.clone().list_rules(request).await?.into_inner();
        Ok(response
            .rules
            .into_iter()
            .map(|rule| RuleRecord::from_proto(rule).to_rule())
            .collect())
    }
}

fn kind_to_proto(kind: AccountKind) -> pb::AccountType {
    match kind {
        AccountKind::Service => pb::AccountType::Service,
        AccountKind::User => pb::AccountType::User,
    }
}

fn account_from_proto(account: pb::Account) -> AccountInfo {
    AccountInfo {
        kind: match account.r#type() {
            pb::AccountType::Service => AccountKind::Service,
            _ => AccountKind::User,
        },
        id: account.id,
        scopes: account.scopes,
        metadata: account.metadata.into_iter().collect(),
        created: account.created,
    }
}
