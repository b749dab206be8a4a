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
use micro_core::lock::lock;
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

mod accounts;
mod grpc;
mod keys;
mod rules;
mod tokens;

use accounts::{hash_blocking, random_token};
use keys::{issuer_for, key_set, new_key};

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
        lock(&self.inner.layers).push(layer.clone());
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
}

fn invalid(message: impl fmt::Display) -> Status {
    Status::invalid_argument(format!("invalid argument: {message}"))
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
        .next_back();
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
