//! [`AuthService`]: the `micro.auth.v1.Auth` server over any store.

use std::{
    collections::HashSet,
    fmt,
    net::IpAddr,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use arc_swap::ArcSwap;
use argon2::{
    Argon2, PasswordHash, PasswordHasher as _, PasswordVerifier as _, password_hash::SaltString,
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use micro_core::{
    auth::{
        Account, AccountKind, Algorithm, AuthLayer, DEFAULT_LEEWAY, Issuer, KeySet,
        MemoryRevocations, RuleSet, SigningKey, Verifier,
    },
    store::{Condition, Put, SharedStore},
};
use ring::rand::{SecureRandom as _, SystemRandom};
use tokio::sync::Semaphore;
use tonic::{Request, Status, metadata::MetadataMap};

use super::{
    AuthOptions, MIN_SECRET_LEN,
    limiter::Limiter,
    records::{
        ACCOUNTS, AccountRecord, KEYS, KeyRecord, REFRESH, REVOCATIONS, RULES, RefreshRecord,
        RevocationRecord, RuleRecord, all, all_decoded, decode, encode, namespace, store_status,
    },
    validate_id, validate_scope,
};
use crate::proto::auth::v1::{self as pb, auth_server::AuthServer};

mod grpc;

/// The answer to every failed credential check: it never says whether the account exists.
const BAD_CREDENTIALS: &str = "invalid credentials: unknown account id, wrong secret, or an \
                               account of another type for this grant";

/// The auth service over a store: add [`AuthService::into_server`] to a micro
/// [`Service`](micro_core::Service), and enforce its decisions in the same process with
/// [`AuthService::layer`]. See the [module docs](super) for the model, the store layout,
/// the brute-force limits and key rotation.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use micro_core::{Service, store::MemoryStore};
/// use micro_platform::auth::{AuthOptions, AuthService};
///
/// let auth = AuthService::new(Arc::new(MemoryStore::new()), AuthOptions::new()).await?;
/// Service::builder("micro.auth")
///     .layer(auth.layer("micro.auth"))
///     .add_service(auth.into_server())
///     .run()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AuthService {
    inner: Arc<Inner>,
}

struct Inner {
    store: SharedStore,
    options: AuthOptions,
    /// The argon2id hash missing ids are verified against.
    dummy_hash: String,
    limiter: Limiter,
    /// Bounds concurrent hashing (each takes 19 MiB).
    hashing: Semaphore,
    keys: RwLock<Keys>,
    verifier: Arc<Verifier>,
    revocations: Arc<MemoryRevocations>,
    rules: ArcSwap<RuleSet>,
    layers: Mutex<Vec<AuthLayer>>,
    /// Serializes read-modify-writes of keys and rules.
    writes: tokio::sync::Mutex<()>,
    random: SystemRandom,
}

/// The signing keys: the issuer of the current one, and every stored record.
struct Keys {
    issuer: Arc<Issuer>,
    records: Vec<KeyRecord>,
}

impl fmt::Debug for AuthService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthService")
            .field("store", &self.inner.store.name())
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

// === impl AuthService ===

impl AuthService {
    /// Serves the accounts, keys, rules and revocations kept in `store`: loads them, and on
    /// a first start (no key stored) creates and stores an Ed25519 signing key.
    ///
    /// # Errors
    /// UNAVAILABLE when the store fails, DATA_LOSS when a stored record does not decode.
    pub async fn new(store: SharedStore, options: AuthOptions) -> Result<Self, Status> {
        let random = SystemRandom::new();
        let dummy_secret = random_token(&random)?;
        let dummy_hash = hash_blocking(dummy_secret, &random).await?;
        let mut records: Vec<KeyRecord> = all_decoded(&store, KEYS).await?;
        let current = match records
            .iter()
            .filter(|r| r.retired.is_none())
            .max_by_key(|r| r.created)
        {
            Some(current) => current.clone(),
            None => {
                let record = new_key(&random, unix((options.clock)()))?;
                put_json(&store, KEYS, &record.kid, &record, Condition::Absent, None).await?;
                records.push(record.clone());
                record
            }
        };
        let issuer = Arc::new(issuer_for(&options, &current)?);
        let revocations = Arc::new(MemoryRevocations::new());
        let verifier = Arc::new(
            Verifier::new(
                key_set(&records)?,
                options.issuer.clone(),
                options.audience.clone(),
            )
            .with_revocations(revocations.clone()),
        );
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let service = Self {
            inner: Arc::new(Inner {
                limiter: Limiter::new(options.brute_force),
                hashing: Semaphore::new(cores),
                store,
                options,
                dummy_hash,
                keys: RwLock::new(Keys { issuer, records }),
                verifier,
                revocations,
                rules: ArcSwap::from_pointee(RuleSet::default()),
                layers: Mutex::new(Vec::new()),
                writes: tokio::sync::Mutex::new(()),
                random,
            }),
        };
        service.reload_rules().await?;
        for record in all_decoded::<RevocationRecord>(&service.inner.store, REVOCATIONS).await? {
            service.remember_revocation(&record);
        }
        service.prune_keys().await?;
        Ok(service)
    }

    /// The tonic server.
    pub fn into_server(self) -> AuthServer<Self> {
        AuthServer::new(self)
    }

    /// The store served.
    pub fn store(&self) -> &SharedStore {
        &self.inner.store
    }

    /// The options in force.
    pub fn options(&self) -> &AuthOptions {
        &self.inner.options
    }

    /// A micro-core [`AuthLayer`] for the service registered as `name`, enforcing this
    /// service's decisions in process: it verifies tokens with the service's current keys
    /// and revocations and decides with its rules, each updated the moment the service
    /// changes them (no polling). Clones of the layer (also after its builder setters) stay
    /// updated. The service keeps every layer it handed out: make one per server at start,
    /// not one per call.
    pub fn layer(&self, name: impl Into<String>) -> AuthLayer {
        let layer = AuthLayer::new(name, self.inner.verifier.clone(), (*self.rules()).clone());
        self.inner
            .layers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(layer.clone());
        layer
    }

    /// The verifier of the service's tokens (current keys and revocations).
    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.inner.verifier
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<RuleSet> {
        self.inner.rules.load_full()
    }

    /// Whether the store holds no account and no rule (a first start, for seeding).
    ///
    /// # Errors
    /// UNAVAILABLE when the store fails.
    pub async fn is_empty(&self) -> Result<bool, Status> {
        for table in [ACCOUNTS, RULES] {
            let page = self
                .inner
                .store
                .list(
                    &namespace(table),
                    micro_core::store::ListOptions {
                        limit: 1,
                        ..Default::default()
                    },
                )
                .await
                .map_err(store_status)?;
            if !page.keys.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// On a first start (no account and no rule stored), creates the service account
    /// [`ADMIN_ID`](super::ADMIN_ID) with scope [`ADMIN_SCOPE`](super::ADMIN_SCOPE) and the
    /// [`default_rules`](super::default_rules); returns the admin's secret (`admin_secret`
    /// when given, else a generated one). Returns `None` and changes nothing when the store
    /// already holds accounts or rules.
    ///
    /// # Errors
    /// INVALID_ARGUMENT for a given secret shorter than 16 bytes, UNAVAILABLE when the
    /// store fails.
    pub async fn seed(&self, admin_secret: Option<String>) -> Result<Option<String>, Status> {
        if !self.is_empty().await? {
            return Ok(None);
        }
        for rule in super::default_rules() {
            self.create_rule(super::records::rule_to_proto(&rule))
                .await?;
        }
        let response = self
            .generate(pb::GenerateRequest {
                id: super::ADMIN_ID.to_owned(),
                r#type: pb::AccountType::Service as i32,
                scopes: vec![super::ADMIN_SCOPE.to_owned()],
                metadata: std::collections::HashMap::new(),
                secret: admin_secret.unwrap_or_default(),
            })
            .await?;
        Ok(Some(response.secret))
    }

    fn now(&self) -> i64 {
        unix((self.inner.options.clock)())
    }

    /// Seconds a retired key stays published, and a jti revocation at most lives.
    fn token_horizon(&self) -> i64 {
        secs(self.inner.options.access_lifetime) + secs(DEFAULT_LEEWAY)
    }

    // --- accounts ---

    async fn generate(&self, request: pb::GenerateRequest) -> Result<pb::GenerateResponse, Status> {
        validate_id(&request.id).map_err(invalid)?;
        for scope in &request.scopes {
            validate_scope(scope).map_err(invalid)?;
        }
        let kind = match pb::AccountType::try_from(request.r#type) {
            Ok(pb::AccountType::Service) => "service",
            Ok(pb::AccountType::User | pb::AccountType::Unspecified) => "user",
            Err(_) => return Err(invalid(format!("unknown account type {}", request.r#type))),
        };
        let secret = self.secret_or_generate(request.secret)?;
        let record = AccountRecord {
            id: request.id,
            kind: kind.to_owned(),
            scopes: request.scopes,
            metadata: request.metadata.into_iter().collect(),
            created: self.now(),
            secret_hash: self.hash(secret.clone()).await?,
        };
        put_json(
            &self.inner.store,
            ACCOUNTS,
            &record.id,
            &record,
            Condition::Absent,
            None,
        )
        .await
        .map_err(|status| match status.code() {
            tonic::Code::Aborted => {
                Status::already_exists(format!("account {:?} already exists", record.id))
            }
            _ => status,
        })?;
        tracing::info!(account = %record.id, kind, "auth: account created");
        Ok(pb::GenerateResponse {
            account: Some(record.to_proto()),
            secret,
        })
    }

    async fn list_accounts(&self) -> Result<Vec<pb::Account>, Status> {
        Ok(all_decoded::<AccountRecord>(&self.inner.store, ACCOUNTS)
            .await?
            .iter()
            .map(AccountRecord::to_proto)
            .collect())
    }

    async fn delete_account(&self, id: &str) -> Result<(), Status> {
        validate_id(id).map_err(invalid)?;
        let deleted = self
            .inner
            .store
            .delete(&namespace(ACCOUNTS), id, Condition::None)
            .await
            .map_err(store_status)?;
        if !deleted {
            return Err(Status::not_found(format!("account {id:?} does not exist")));
        }
        // Every access token issued until now, including this second.
        let now = self.now();
        self.revoke_record(RevocationRecord {
            token_id: String::new(),
            account_id: id.to_owned(),
            issued_before: now + 1,
            expires: now + self.token_horizon(),
        })
        .await?;
        let refresh = all(&self.inner.store, REFRESH).await?;
        let mine: Vec<String> = refresh
            .iter()
            .filter(|record| {
                decode::<RefreshRecord>(REFRESH, record).is_ok_and(|r| r.account == id)
            })
            .map(|record| record.key.clone())
            .collect();
        for chunk in mine.chunks(micro_core::store::MAX_BATCH) {
            self.inner
                .store
                .delete_many(&namespace(REFRESH), chunk)
                .await
                .map_err(store_status)?;
        }
        tracing::info!(account = %id, refresh_tokens = mine.len(), "auth: account deleted, its tokens revoked");
        Ok(())
    }

    async fn rotate_secret(&self, id: &str, secret: String) -> Result<String, Status> {
        validate_id(id).map_err(invalid)?;
        let secret = self.secret_or_generate(secret)?;
        let hash = self.hash(secret.clone()).await?;
        let Some(stored) = self
            .inner
            .store
            .get(&namespace(ACCOUNTS), id)
            .await
            .map_err(store_status)?
        else {
            return Err(Status::not_found(format!("account {id:?} does not exist")));
        };
        let mut record: AccountRecord = decode(ACCOUNTS, &stored)?;
        record.secret_hash = hash;
        put_json(
            &self.inner.store,
            ACCOUNTS,
            id,
            &record,
            Condition::Version(stored.version),
            None,
        )
        .await?;
        tracing::info!(account = %id, "auth: secret rotated");
        Ok(secret)
    }

    fn secret_or_generate(&self, secret: String) -> Result<String, Status> {
        if secret.is_empty() {
            return random_token(&self.inner.random);
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(invalid(format!(
                "secret must be at least {MIN_SECRET_LEN} bytes, got {}; leave it empty to \
                 have one generated",
                secret.len()
            )));
        }
        Ok(secret)
    }

    async fn hash(&self, secret: String) -> Result<String, Status> {
        let _permit = self
            .inner
            .hashing
            .acquire()
            .await
            .map_err(|_| Status::unavailable("auth: the service is shutting down"))?;
        hash_blocking(secret, &self.inner.random).await
    }

    /// Verifies `secret` against `hash` (argon2id) on the blocking pool.
    async fn verify_secret(&self, secret: String, hash: String) -> Result<bool, Status> {
        let _permit = self
            .inner
            .hashing
            .acquire()
            .await
            .map_err(|_| Status::unavailable("auth: the service is shutting down"))?;
        tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash).is_ok_and(|parsed| {
                Argon2::default()
                    .verify_password(secret.as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .await
        .map_err(|error| Status::internal(format!("auth: secret verification failed: {error}")))
    }

    // --- tokens ---

    async fn token(
        &self,
        request: pb::TokenRequest,
        source: Option<IpAddr>,
    ) -> Result<pb::TokenResponse, Status> {
        self.prune_keys().await?;
        match request.grant_type.as_str() {
            super::grant::CLIENT_CREDENTIALS => {
                let account = self
                    .authenticate(&request.id, request.secret, source, AccountKind::Service)
                    .await?;
                let scopes = narrow(&account.scopes, &request.scopes)?;
                self.respond(&account, scopes, false).await
            }
            super::grant::PASSWORD => {
                if !self.inner.options.password_grant {
                    return Err(Status::failed_precondition(
                        "grant_type password is not enabled on this auth service \
                         (AuthOptions::password_grant)",
                    ));
                }
                let account = self
                    .authenticate(&request.id, request.secret, source, AccountKind::User)
                    .await?;
                let scopes = narrow(&account.scopes, &request.scopes)?;
                self.respond(&account, scopes, true).await
            }
            super::grant::REFRESH_TOKEN => self.refresh(request, source).await,
            "" => Err(invalid(
                "grant_type is required (client_credentials, refresh_token or password)",
            )),
            other => Err(invalid(format!(
                "grant_type {other:?} is not supported; use client_credentials, refresh_token \
                 or password"
            ))),
        }
    }

    fn limited(&self, id: Option<&str>, source: Option<IpAddr>) -> Result<(), Status> {
        self.inner
            .limiter
            .check(id, source, Instant::now())
            .map_err(|retry| {
                let seconds = retry.as_secs() + u64::from(retry.subsec_nanos() > 0);
                let mut metadata = MetadataMap::new();
                metadata.insert("retry-after", seconds.max(1).into());
                tracing::warn!(account = id, source = ?source, retry_after = seconds, "auth: too many failed attempts");
                Status::with_metadata(
                    tonic::Code::ResourceExhausted,
                    format!(
                        "too many failed attempts for this account id or source address; \
                         retry after {} s",
                        seconds.max(1)
                    ),
                    metadata,
                )
            })
    }

    /// Checks an id and secret, in the same time whether or not the id exists.
    async fn authenticate(
        &self,
        id: &str,
        secret: String,
        source: Option<IpAddr>,
        kind: AccountKind,
    ) -> Result<AccountRecord, Status> {
        validate_id(id).map_err(invalid)?;
        self.limited(Some(id), source)?;
        let stored = self
            .inner
            .store
            .get(&namespace(ACCOUNTS), id)
            .await
            .map_err(store_status)?;
        let account = stored
            .as_ref()
            .map(|record| decode::<AccountRecord>(ACCOUNTS, record))
            .transpose()?;
        let hash = account
            .as_ref()
            .map_or_else(|| self.inner.dummy_hash.clone(), |a| a.secret_hash.clone());
        let matches = self.verify_secret(secret, hash).await?;
        match account {
            Some(account) if matches && account_kind(&account) == kind => {
                self.inner.limiter.succeed(id);
                Ok(account)
            }
            _ => {
                self.inner.limiter.fail(Some(id), source, Instant::now());
                Err(Status::unauthenticated(BAD_CREDENTIALS))
            }
        }
    }

    async fn refresh(
        &self,
        request: pb::TokenRequest,
        source: Option<IpAddr>,
    ) -> Result<pb::TokenResponse, Status> {
        if request.refresh_token.is_empty() {
            return Err(invalid(
                "refresh_token is required for grant_type refresh_token",
            ));
        }
        self.limited(None, source)?;
        let key = sha256_hex(&request.refresh_token);
        let refused = || {
            self.inner.limiter.fail(None, source, Instant::now());
            Status::unauthenticated("invalid refresh token: unknown, used, expired or revoked")
        };
        let stored = self
            .inner
            .store
            .get(&namespace(REFRESH), &key)
            .await
            .map_err(store_status)?;
        let Some(stored) = stored else {
            return Err(refused());
        };
        // Single use: of two concurrent refreshes only one deletes this version.
        let won = self
            .inner
            .store
            .delete(
                &namespace(REFRESH),
                &key,
                Condition::Version(stored.version),
            )
            .await
            .map_err(store_status)?;
        let record: RefreshRecord = decode(REFRESH, &stored)?;
        if !won || record.expires <= self.now() {
            return Err(refused());
        }
        let account = self
            .inner
            .store
            .get(&namespace(ACCOUNTS), &record.account)
            .await
            .map_err(store_status)?;
        let Some(account) = account else {
            return Err(refused());
        };
        let account: AccountRecord = decode(ACCOUNTS, &account)?;
        let scopes = narrow(&record.scopes, &request.scopes)?;
        // The new refresh token carries the scopes of the old one, not the narrowed ones.
        let mut response = self.respond(&account, record.scopes, true).await?;
        if scopes.len() != response.scopes.len() {
            let narrowed = self.issue(&account, scopes)?;
            response.access_token = narrowed.token;
            response.scopes = narrowed.claims.scopes;
        }
        Ok(response)
    }

    fn issue(
        &self,
        account: &AccountRecord,
        scopes: Vec<String>,
    ) -> Result<micro_core::auth::AccessToken, Status> {
        let issuer = self
            .inner
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .issuer
            .clone();
        let core = Account {
            id: account.id.clone(),
            kind: account_kind(account),
            scopes,
            metadata: account.metadata.clone(),
            issuer: self.inner.options.issuer.clone(),
        };
        issuer
            .issue_at(&core, (self.inner.options.clock)())
            .map_err(|error| Status::internal(format!("auth: cannot sign a token: {error}")))
    }

    /// The access token for `account` with `scopes`, and a refresh token when `refresh`.
    async fn respond(
        &self,
        account: &AccountRecord,
        scopes: Vec<String>,
        refresh: bool,
    ) -> Result<pb::TokenResponse, Status> {
        let token = self.issue(account, scopes.clone())?;
        let refresh_token = if refresh {
            let token = random_token(&self.inner.random)?;
            let lifetime = self.inner.options.refresh_lifetime;
            let record = RefreshRecord {
                account: account.id.clone(),
                scopes,
                expires: self.now() + secs(lifetime),
            };
            put_json(
                &self.inner.store,
                REFRESH,
                &sha256_hex(&token),
                &record,
                Condition::Absent,
                Some(lifetime),
            )
            .await?;
            token
        } else {
            String::new()
        };
        Ok(pb::TokenResponse {
            expires_in: token.claims.exp - token.claims.iat.unwrap_or(token.claims.exp),
            access_token: token.token,
            token_type: "Bearer".to_owned(),
            refresh_token,
            scopes: token.claims.scopes,
        })
    }

    async fn inspect(&self, token: &str) -> Result<pb::InspectResponse, Status> {
        self.prune_keys().await?;
        let claims = self
            .inner
            .verifier
            .verify_at(token, (self.inner.options.clock)())
            .map_err(|error| Status::unauthenticated(format!("invalid access token: {error}")))?;
        let created = match self
            .inner
            .store
            .get(&namespace(ACCOUNTS), &claims.sub)
            .await
            .map_err(store_status)?
        {
            Some(record) => decode::<AccountRecord>(ACCOUNTS, &record)?.created,
            None => 0,
        };
        let kind = match claims.kind {
            AccountKind::Service => pb::AccountType::Service,
            AccountKind::User => pb::AccountType::User,
        };
        Ok(pb::InspectResponse {
            account: Some(pb::Account {
                id: claims.sub,
                r#type: kind as i32,
                scopes: claims.scopes,
                metadata: claims.metadata.into_iter().collect(),
                created,
            }),
            token_id: claims.jti,
            issued: claims.iat.unwrap_or_default(),
            expires: claims.exp,
            issuer: claims.iss,
        })
    }

    async fn revoke(&self, request: pb::RevokeRequest) -> Result<(), Status> {
        let now = self.now();
        if !request.token_id.is_empty() {
            return self
                .revoke_record(RevocationRecord {
                    token_id: request.token_id,
                    account_id: String::new(),
                    issued_before: 0,
                    expires: now + self.token_horizon(),
                })
                .await;
        }
        if request.token.is_empty() {
            return Err(invalid("one of token or token_id is required"));
        }
        if request.token.matches('.').count() == 2 {
            use micro_core::auth::TokenError;
            return match self
                .inner
                .verifier
                .verify_at(&request.token, (self.inner.options.clock)())
            {
                Ok(claims) => {
                    self.revoke_record(RevocationRecord {
                        token_id: claims.jti,
                        account_id: String::new(),
                        issued_before: 0,
                        expires: claims.exp + secs(DEFAULT_LEEWAY),
                    })
                    .await
                }
                // Nothing left to revoke (RFC 7009 §2.2).
                Err(TokenError::Revoked | TokenError::Expired) => Ok(()),
                Err(error) => Err(invalid(format!(
                    "token is not an access token of this service: {error}"
                ))),
            };
        }
        // A refresh token; an unknown one is already unusable (RFC 7009 §2.2).
        let deleted = self
            .inner
            .store
            .delete(
                &namespace(REFRESH),
                &sha256_hex(&request.token),
                Condition::None,
            )
            .await
            .map_err(store_status)?;
        tracing::info!(found = deleted, "auth: refresh token revoked");
        Ok(())
    }

    async fn revoke_record(&self, record: RevocationRecord) -> Result<(), Status> {
        let ttl = u64::try_from(record.expires - self.now() + secs(DEFAULT_LEEWAY))
            .unwrap_or(1)
            .max(1);
        put_json(
            &self.inner.store,
            REVOCATIONS,
            &record.key(),
            &record,
            Condition::None,
            Some(Duration::from_secs(ttl)),
        )
        .await?;
        self.remember_revocation(&record);
        tracing::info!(token = %record.token_id, account = %record.account_id, "auth: revoked");
        Ok(())
    }

    fn remember_revocation(&self, record: &RevocationRecord) {
        if record.token_id.is_empty() {
            self.inner.revocations.revoke_account(
                record.account_id.clone(),
                record.issued_before,
                record.expires,
            );
        } else {
            self.inner
                .revocations
                .revoke(record.token_id.clone(), record.expires);
        }
    }

    async fn list_revocations(&self) -> Result<Vec<pb::Revocation>, Status> {
        let now = self.now();
        self.inner
            .revocations
            .purge((self.inner.options.clock)(), DEFAULT_LEEWAY);
        Ok(
            all_decoded::<RevocationRecord>(&self.inner.store, REVOCATIONS)
                .await?
                .iter()
                .filter(|r| r.expires + secs(DEFAULT_LEEWAY) >= now)
                .map(RevocationRecord::to_proto)
                .collect(),
        )
    }

    // --- keys ---

    /// The JWK Set JSON and the current kid.
    async fn jwks(&self) -> Result<(String, String), Status> {
        self.prune_keys().await?;
        let keys = self.inner.verifier.keys();
        let json = serde_json::to_string(&keys.to_jwks())
            .map_err(|error| Status::internal(format!("auth: cannot encode the JWKS: {error}")))?;
        let current = self
            .inner
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .issuer
            .key()
            .kid()
            .to_owned();
        Ok((json, current))
    }

    async fn rotate_keys(&self) -> Result<pb::RotateKeysResponse, Status> {
        let _write = self.inner.writes.lock().await;
        let now = self.now();
        let record = new_key(&self.inner.random, now)?;
        let issuer = Arc::new(issuer_for(&self.inner.options, &record)?);
        put_json(
            &self.inner.store,
            KEYS,
            &record.kid,
            &record,
            Condition::Absent,
            None,
        )
        .await?;
        let mut retired = Vec::new();
        let records = self
            .inner
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .records
            .clone();
        for mut old in records {
            if old.retired.is_none() {
                old.retired = Some(now);
                put_json(
                    &self.inner.store,
                    KEYS,
                    &old.kid,
                    &old,
                    Condition::None,
                    None,
                )
                .await?;
            }
            retired.push(old);
        }
        retired.push(record.clone());
        self.inner.verifier.set_keys(key_set(&retired)?);
        *self.inner.keys.write().unwrap_or_else(|e| e.into_inner()) = Keys {
            issuer,
            records: retired,
        };
        drop(_write);
        self.prune_keys().await?;
        tracing::info!(kid = %record.kid, "auth: signing key rotated");
        let published = self
            .inner
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .records
            .iter()
            .map(|r| r.kid.clone())
            .collect();
        Ok(pb::RotateKeysResponse {
            current_kid: record.kid,
            published_kids: published,
        })
    }

    /// Deletes retired keys whose last token has expired (lifetime + leeway after their
    /// retirement) and publishes the rest.
    async fn prune_keys(&self) -> Result<(), Status> {
        let horizon = self.now() - self.token_horizon();
        let expired: Vec<String> = self
            .inner
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .records
            .iter()
            .filter(|r| r.retired.is_some_and(|retired| retired <= horizon))
            .map(|r| r.kid.clone())
            .collect();
        if expired.is_empty() {
            return Ok(());
        }
        let _write = self.inner.writes.lock().await;
        self.inner
            .store
            .delete_many(&namespace(KEYS), &expired)
            .await
            .map_err(store_status)?;
        let mut keys = self.inner.keys.write().unwrap_or_else(|e| e.into_inner());
        keys.records.retain(|r| !expired.contains(&r.kid));
        self.inner.verifier.set_keys(key_set(&keys.records)?);
        tracing::info!(kids = ?expired, "auth: retired signing keys pruned");
        Ok(())
    }

    // --- rules ---

    async fn create_rule(&self, rule: pb::Rule) -> Result<(), Status> {
        let _write = self.inner.writes.lock().await;
        let record = RuleRecord::from_proto(rule);
        let mut rules: Vec<_> = self.rules().rules().to_vec();
        if rules.iter().any(|r| r.id == record.id) {
            return Err(Status::already_exists(format!(
                "rule {:?} already exists; delete it first to replace it",
                record.id
            )));
        }
        rules.push(record.to_rule());
        RuleSet::new(rules).map_err(|error| invalid(format!("rule {:?}: {error}", record.id)))?;
        put_json(
            &self.inner.store,
            RULES,
            &record.id,
            &record,
            Condition::Absent,
            None,
        )
        .await
        .map_err(|status| match status.code() {
            tonic::Code::Aborted => {
                Status::already_exists(format!("rule {:?} already exists", record.id))
            }
            _ => status,
        })?;
        self.reload_rules().await?;
        tracing::info!(rule = %record.id, "auth: rule created");
        Ok(())
    }

    async fn delete_rule(&self, id: &str) -> Result<(), Status> {
        let _write = self.inner.writes.lock().await;
        if id.is_empty() {
            return Err(invalid("rule id is required"));
        }
        let deleted = self
            .inner
            .store
            .delete(&namespace(RULES), id, Condition::None)
            .await
            .map_err(store_status)?;
        if !deleted {
            return Err(Status::not_found(format!("rule {id:?} does not exist")));
        }
        self.reload_rules().await?;
        tracing::info!(rule = %id, "auth: rule deleted");
        Ok(())
    }

    /// Reads the rules from the store and hands them to every layer.
    async fn reload_rules(&self) -> Result<(), Status> {
        let records: Vec<RuleRecord> = all_decoded(&self.inner.store, RULES).await?;
        let rules = RuleSet::new(records.iter().map(RuleRecord::to_rule))
            .map_err(|error| Status::data_loss(format!("auth store: stored rules: {error}")))?;
        let layers = self
            .inner
            .layers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for layer in layers {
            layer.set_rules(rules.clone());
        }
        self.inner.rules.store(Arc::new(rules));
        Ok(())
    }
}

/// The scopes to put in a token: all of `held` when none are asked for, else the asked
/// ones, each of which must be held.
fn narrow(held: &[String], asked: &[String]) -> Result<Vec<String>, Status> {
    if asked.is_empty() {
        return Ok(held.to_vec());
    }
    let held: HashSet<&str> = held.iter().map(String::as_str).collect();
    let mut scopes = Vec::with_capacity(asked.len());
    for scope in asked {
        if !held.contains(scope.as_str()) {
            return Err(invalid(format!(
                "scope {scope:?} is not held by the account (invalid_scope)"
            )));
        }
        if !scopes.contains(scope) {
            scopes.push(scope.clone());
        }
    }
    Ok(scopes)
}

fn account_kind(account: &AccountRecord) -> AccountKind {
    match account.kind() {
        pb::AccountType::Service => AccountKind::Service,
        _ => AccountKind::User,
    }
}

fn invalid(message: impl fmt::Display) -> Status {
    Status::invalid_argument(format!("invalid argument: {message}"))
}

/// 32 random bytes, base64url without padding.
fn random_token(random: &SystemRandom) -> Result<String, Status> {
    let mut bytes = [0u8; 32];
    random
        .fill(&mut bytes)
        .map_err(|_| Status::internal("auth: the system random source failed"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// The argon2id PHC string of `secret` (default parameters), computed on the blocking pool.
async fn hash_blocking(secret: String, random: &SystemRandom) -> Result<String, Status> {
    let mut salt = [0u8; 16];
    random
        .fill(&mut salt)
        .map_err(|_| Status::internal("auth: the system random source failed"))?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&salt)
            .map_err(|error| Status::internal(format!("auth: salt: {error}")))?;
        Argon2::default()
            .hash_password(secret.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|error| Status::internal(format!("auth: cannot hash a secret: {error}")))
    })
    .await
    .map_err(|error| Status::internal(format!("auth: hashing failed: {error}")))?
}

pub(super) fn sha256_hex(token: &str) -> String {
    use std::fmt::Write as _;
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest.as_ref() {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

fn new_key(random: &SystemRandom, now: i64) -> Result<KeyRecord, Status> {
    let mut id = [0u8; 8];
    random
        .fill(&mut id)
        .map_err(|_| Status::internal("auth: the system random source failed"))?;
    let kid = format!("{now}-{}", URL_SAFE_NO_PAD.encode(id));
    let key = SigningKey::generate(Algorithm::EdDSA, kid.clone())
        .map_err(|error| Status::internal(format!("auth: cannot generate a key: {error}")))?;
    Ok(KeyRecord {
        kid,
        alg: Algorithm::EdDSA.as_str().to_owned(),
        pkcs8: URL_SAFE_NO_PAD.encode(key.to_pkcs8()),
        created: now,
        retired: None,
    })
}

fn signing_key(record: &KeyRecord) -> Result<SigningKey, Status> {
    let broken =
        |what: String| Status::data_loss(format!("auth store: key {:?}: {what}", record.kid));
    let alg: Algorithm = record
        .alg
        .parse()
        .map_err(|_| broken(format!("unknown algorithm {:?}", record.alg)))?;
    let pkcs8 = URL_SAFE_NO_PAD
        .decode(&record.pkcs8)
        .map_err(|_| broken("the private key is not base64url".to_owned()))?;
    SigningKey::from_pkcs8(alg, record.kid.clone(), &pkcs8)
        .map_err(|error| broken(error.to_string()))
}

fn issuer_for(options: &AuthOptions, record: &KeyRecord) -> Result<Issuer, Status> {
    Ok(Issuer::new(
        options.issuer.clone(),
        options.audience.clone(),
        signing_key(record)?,
    )
    .with_lifetime(options.access_lifetime))
}

fn key_set(records: &[KeyRecord]) -> Result<KeySet, Status> {
    let mut set = KeySet::new();
    for record in records {
        set.insert_signing(&signing_key(record)?).map_err(|error| {
            Status::data_loss(format!("auth store: key {:?}: {error}", record.kid))
        })?;
    }
    Ok(set)
}

async fn put_json<T: serde::Serialize>(
    store: &SharedStore,
    table: &str,
    key: &str,
    value: &T,
    condition: Condition,
    ttl: Option<Duration>,
) -> Result<u64, Status> {
    let mut put = Put::new(key, encode(value)?).condition(condition);
    if let Some(ttl) = ttl {
        put = put.ttl(ttl);
    }
    store
        .put(&namespace(table), put)
        .await
        .map_err(|error| match error {
            micro_core::StoreError::ConditionFailed { .. } => Status::aborted(error.to_string()),
            other => store_status(other),
        })
}

/// The source address of a call: the peer's IP, or the last `x-forwarded-for` entry when
/// the peer is a trusted proxy.
pub(super) fn source<T>(request: &Request<T>, options: &AuthOptions) -> Option<IpAddr> {
    let peer = request.remote_addr().map(|addr| addr.ip())?;
    if !options.trusts(peer) {
        return Some(peer);
    }
    let forwarded = request
        .metadata()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|entry| entry.trim().parse::<IpAddr>().ok())
        .last();
    Some(forwarded.unwrap_or(peer))
}

fn unix(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => secs(after),
        Err(before) => -secs(before.duration()),
    }
}

fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX / 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_narrow_to_held_ones() {
        let held = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(narrow(&held, &[]).unwrap(), held);
        assert_eq!(narrow(&held, &["b".to_owned()]).unwrap(), vec!["b"]);
        let err = narrow(&held, &["c".to_owned()]).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("\"c\""), "{}", err.message());
    }

    #[test]
    fn refresh_tokens_are_stored_as_sha256() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
