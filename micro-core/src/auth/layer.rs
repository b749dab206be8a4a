//! [`AuthLayer`]: the server layer that authenticates each call with its bearer token and
//! authorizes it with the [`RuleSet`].

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::SystemTime,
};

use arc_swap::ArcSwap;
use futures_util::future::{Either, Ready, ready};
use http::{HeaderMap, Request, Response, header::AUTHORIZATION};
use tonic::Status;
use tower::Layer;
use tower_service::Service;

use super::{
    jwks::KeySet,
    rules::{Account, Denied, Resource, RuleSet},
    token::{TokenError, Verifier},
};
use crate::lock::lock;

/// Most tokens the verification cache of an [`AuthLayer`] holds. Default of
/// [`AuthLayer::cache_capacity`].
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

/// Path prefix of the gRPC health service, public by default.
pub const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// Path prefix of the gRPC reflection services (v1 and v1alpha), behind the rules by
/// default.
pub const REFLECTION_PREFIX: &str = "/grpc.reflection.";

const SHARDS: usize = 16;

/// Authenticates and authorizes every call of a server.
///
/// For each request:
///
/// 1. Calls to the **health** service (`/grpc.health.v1.Health/*`) pass without any check,
///    unless [`public_health(false)`](Self::public_health). Calls to **reflection**
///    (`/grpc.reflection.*`) follow the rules like any other endpoint, unless
///    [`public_reflection(true)`](Self::public_reflection). A public path is not
///    authenticated at all: a token sent to it is not even read.
/// 2. The `authorization: Bearer <token>` header is verified with the [`Verifier`]. No
///    header makes an anonymous caller. A header that is present but invalid (not
///    `Bearer`, malformed, bad signature, expired, revoked, unknown key…) is refused with
///    `UNAUTHENTICATED`, even when the endpoint is public: as in RFC 6750 §3.1, a client
///    that presents a bad token learns so instead of silently being treated as anonymous.
/// 3. The [`RuleSet`] decides for the [`Resource`] `{ kind: "service", name: <the name
///    given to the layer, or the one given for the called gRPC service with
///    [`service_name`](Self::service_name)>, endpoint: "<Service>.<Method>" }`, where the endpoint is the
///    gRPC path `/<package>.<Service>/<Method>` without its package: the path
///    `/greeter.v1.Greeter/SayHello` is the endpoint `Greeter.SayHello`
///    (see [`endpoint`]). [`Denied::Unauthenticated`] answers `UNAUTHENTICATED`,
///    [`Denied::Forbidden`] `PERMISSION_DENIED`, with a message naming the endpoint (never
///    the token).
/// 4. The verified [`Account`] goes into the request's extensions (as an `Arc<Account>`),
///    where a handler reads it with [`account`](super::account).
///
/// A refusal is a trailers-only gRPC response (HTTP 200 with `grpc-status` and
/// `grpc-message`); the inner service is not called.
///
/// # Rules at run time
///
/// Clones share the rules (also clones changed with the builder setters afterwards):
/// [`set_rules`](Self::set_rules) on any of them takes effect on the next call of every
/// server using the layer, without restart.
///
/// # Verification cache
///
/// Verifying a signature costs tens of microseconds, so the layer keeps up to
/// [`DEFAULT_CACHE_CAPACITY`] verified tokens (16 shards of a foldhash map keyed by the
/// token string; a full shard is emptied before it takes a new token). A cached token skips
/// parsing and the signature check, but every hit checks again what may change after the
/// first verification: the verifier's key set is still the one the token verified with
/// (after [`Verifier::set_keys`] every token is verified again in full on its next call,
/// so a removed or replaced key rejects its tokens at once), the token has not expired (with the verifier's leeway), and its `jti` is not revoked in the
/// verifier's [`Revocations`](super::Revocations) (revocation stays immediate). Failed
/// verifications are never cached.
///
/// ```
/// use std::sync::Arc;
/// use micro_core::auth::{AuthLayer, KeySet, RuleSet, Verifier};
///
/// let verifier = Arc::new(Verifier::new(KeySet::new(), "https://auth.example", "micro"));
/// let auth = AuthLayer::new("greeter", verifier, RuleSet::default());
/// // Service::builder("greeter").layer(auth.clone()) …; later: auth.set_rules(new_rules);
/// # let _ = auth;
/// ```
#[derive(Clone)]
pub struct AuthLayer {
    shared: Arc<Shared>,
}

struct Shared {
    name: String,
    /// gRPC service (`micro.kv.v1.Kv`) → the name rules see for it, instead of `name`.
    service_names: HashMap<Box<str>, Box<str>>,
    verifier: Arc<Verifier>,
    rules: Arc<ArcSwap<RuleSet>>,
    public_health: bool,
    public_reflection: bool,
    cache: TokenCache,
    clock: fn() -> SystemTime,
}

/// The service made by [`AuthLayer`].
#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    shared: Arc<Shared>,
}

// === impl AuthLayer ===

impl AuthLayer {
    /// A layer for the service registered as `name`, verifying tokens with `verifier` and
    /// deciding with `rules`. Health public, reflection behind the rules, a cache of
    /// [`DEFAULT_CACHE_CAPACITY`] tokens.
    pub fn new(name: impl Into<String>, verifier: Arc<Verifier>, rules: RuleSet) -> Self {
        Self {
            shared: Arc::new(Shared {
                name: name.into(),
                service_names: HashMap::new(),
                verifier,
                rules: Arc::new(ArcSwap::from_pointee(rules)),
                public_health: true,
                public_reflection: false,
                cache: TokenCache::new(DEFAULT_CACHE_CAPACITY),
                clock: SystemTime::now,
            }),
        }
    }

    fn with(self, f: impl FnOnce(&mut Shared)) -> Self {
        let shared = Arc::try_unwrap(self.shared).unwrap_or_else(|shared| Shared {
            name: shared.name.clone(),
            service_names: shared.service_names.clone(),
            verifier: shared.verifier.clone(),
            rules: shared.rules.clone(),
            public_health: shared.public_health,
            public_reflection: shared.public_reflection,
            cache: TokenCache::new(shared.cache.capacity),
            clock: shared.clock,
        });
        let mut shared = shared;
        f(&mut shared);
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Whether calls to `/grpc.health.v1.Health/*` skip authentication and the rules.
    /// Default is `true`.
    #[must_use]
    pub fn public_health(self, public: bool) -> Self {
        self.with(|s| s.public_health = public)
    }

    /// Whether calls to `/grpc.reflection.*` skip authentication and the rules. Default is
    /// `false`: reflection follows the rules (endpoint `ServerReflection.ServerReflectionInfo`).
    #[must_use]
    pub fn public_reflection(self, public: bool) -> Self {
        self.with(|s| s.public_reflection = public)
    }

    /// Decides calls to the gRPC service `grpc_service` (its full name, e.g.
    /// `micro.kv.v1.Kv`) as calls to the service registered as `name` (the resource name
    /// rules see) instead of the layer's own name: for one server hosting several services
    /// registered under their own names, such as `micro server`. Calls to other gRPC
    /// services keep the layer's name. Default is none.
    #[must_use]
    pub fn service_name(self, grpc_service: impl Into<String>, name: impl Into<String>) -> Self {
        let (grpc_service, name) = (grpc_service.into(), name.into());
        self.with(move |s| {
            s.service_names
                .insert(grpc_service.into_boxed_str(), name.into_boxed_str());
        })
    }

    /// Most verified tokens kept in the cache; `0` turns the cache off. Default is
    /// [`DEFAULT_CACHE_CAPACITY`].
    #[must_use]
    pub fn cache_capacity(self, capacity: usize) -> Self {
        self.with(|s| s.cache = TokenCache::new(capacity))
    }

    /// Replaces the rules; the next call of every clone of this layer uses them.
    pub fn set_rules(&self, rules: RuleSet) {
        self.shared.rules.store(Arc::new(rules));
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<RuleSet> {
        self.shared.rules.load_full()
    }

    /// Decides a call to the gRPC `path` with the request `headers`, as the layer does:
    /// `Ok` with the caller's account (`None` for an anonymous or public call), or the
    /// status to refuse the call with.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` or `PERMISSION_DENIED`, as described on [`AuthLayer`].
    pub fn check(&self, path: &str, headers: &HeaderMap) -> Result<Option<Arc<Account>>, Status> {
        self.shared.check(self.shared.name_of(path), path, headers)
    }

    /// [`AuthLayer::check`] for a call to the service registered as `service` rather than
    /// the layer's own name: for a gateway or proxy deciding calls to many services with one
    /// verifier, one token cache and one rule set.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` or `PERMISSION_DENIED`, as described on [`AuthLayer`].
    pub fn check_as(
        &self,
        service: &str,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Option<Arc<Account>>, Status> {
        self.shared.check(service, path, headers)
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth {
            inner,
            shared: self.shared.clone(),
        }
    }
}

impl fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("name", &self.shared.name)
            .field("service_names", &self.shared.service_names)
            .field("public_health", &self.shared.public_health)
            .field("public_reflection", &self.shared.public_reflection)
            .field("cache_capacity", &self.shared.cache.capacity)
            .finish_non_exhaustive()
    }
}

impl<S> fmt::Debug for Auth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

// === impl Shared ===

impl Shared {
    /// The name rules see for a call to `path`: the one given for its gRPC service with
    /// [`AuthLayer::service_name`], else the layer's.
    fn name_of(&self, path: &str) -> &str {
        if self.service_names.is_empty() {
            return &self.name;
        }
        let path = path.strip_prefix('/').unwrap_or(path);
        let service = path.split_once('/').map_or(path, |(service, _)| service);
        self.service_names
            .get(service)
            .map_or(&self.name, |name| name)
    }

    fn check(
        &self,
        name: &str,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Option<Arc<Account>>, Status> {
        if (self.public_health && path.starts_with(HEALTH_PREFIX))
            || (self.public_reflection && path.starts_with(REFLECTION_PREFIX))
        {
            return Ok(None);
        }
        let endpoint = endpoint(path);
        let account = match headers.get(AUTHORIZATION) {
            None => None,
            Some(value) => {
                let token = value.to_str().ok().and_then(bearer).ok_or_else(|| {
                    Status::unauthenticated(format!(
                        "{endpoint}: the authorization header is not `Bearer <token>`"
                    ))
                })?;
                match self.authenticate(token) {
                    Ok(account) => Some(account),
                    Err(error) => {
                        tracing::debug!(%endpoint, %error, "auth: token refused");
                        return Err(Status::unauthenticated(format!(
                            "{endpoint}: invalid access token: {error}"
                        )));
                    }
                }
            }
        };
        let resource = Resource::service(name, endpoint.as_str());
        match self.rules.load().verify(account.as_deref(), &resource) {
            Ok(()) => Ok(account),
            Err(Denied::Unauthenticated) => Err(Status::unauthenticated(format!(
                "{endpoint} of {name}: authentication required; send `authorization: Bearer <token>`"
            ))),
            Err(denied @ Denied::Forbidden { .. }) => {
                tracing::debug!(%endpoint, caller = account.as_ref().map(|a| a.id.as_str()), %denied, "auth: call forbidden");
                Err(Status::permission_denied(format!(
                    "{endpoint} of {name}: {denied}"
                )))
            }
        }
    }

    fn authenticate(&self, token: &str) -> Result<Arc<Account>, TokenError> {
        let now = (self.clock)();
        // A hit verified with an older key set verifies again (a key may have been removed
        // or replaced under the same kid).
        if let Some(hit) = self
            .cache
            .get(token)
            .filter(|hit| self.verifier.keys_unchanged(&hit.keys))
        {
            let claims = (hit.exp, &*hit.jti, hit.account.id.as_str(), hit.iat);
            return match self.verifier.recheck_at(claims, now) {
                Ok(()) => Ok(hit.account),
                Err(error) => {
                    self.cache.remove(token);
                    Err(error)
                }
            };
        }
        let (claims, keys) = self.verifier.verify_keyed_at(token, now)?;
        let entry = Entry {
            exp: claims.exp,
            iat: claims.iat,
            jti: claims.jti.as_str().into(),
            keys,
            account: Arc::new(claims.into_account()),
        };
        let account = entry.account.clone();
        self.cache.insert(token, entry);
        Ok(account)
    }
}

/// The token of an `authorization` header value `Bearer <token>` (scheme case-insensitive,
/// RFC 6750 §2.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The endpoint name rules see for the gRPC `path`: `/greeter.v1.Greeter/SayHello` →
/// `Greeter.SayHello` (the service's name without its package, a dot, the method). A path
/// that is not `/<service>/<method>` is returned without its leading slash.
pub fn endpoint(path: &str) -> String {
    let path = path.strip_prefix('/').unwrap_or(path);
    match path.split_once('/') {
        Some((service, method)) => {
            let service = service.rsplit('.').next().unwrap_or(service);
            let mut endpoint = String::with_capacity(service.len() + 1 + method.len());
            endpoint.push_str(service);
            endpoint.push('.');
            endpoint.push_str(method);
            endpoint
        }
        None => path.to_owned(),
    }
}

// === impl Auth ===

impl<S, B, ResB> Service<Request<B>> for Auth<S>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    ResB: Default,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response<ResB>, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let path = request.uri().path();
        match self
            .shared
            .check(self.shared.name_of(path), path, request.headers())
        {
            Ok(account) => {
                if let Some(account) = account {
                    request.extensions_mut().insert(account);
                }
                Either::Right(self.inner.call(request))
            }
            Err(status) => Either::Left(ready(Ok(status.into_http()))),
        }
    }
}

/// The caller of a call that passed an [`AuthLayer`]: `None` when it was anonymous or the
/// endpoint public (or no `AuthLayer` ran).
pub fn account<T>(request: &tonic::Request<T>) -> Option<&Account> {
    request.extensions().get::<Arc<Account>>().map(|a| &**a)
}

// === TokenCache ===

#[derive(Clone)]
struct Entry {
    exp: i64,
    iat: Option<i64>,
    jti: Box<str>,
    keys: Arc<KeySet>,
    account: Arc<Account>,
}

type Shard = Mutex<foldhash::HashMap<Box<str>, Entry>>;

struct TokenCache {
    capacity: usize,
    per_shard: usize,
    shards: Box<[Shard]>,
    hasher: foldhash::fast::RandomState,
}

impl TokenCache {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            per_shard: capacity.div_ceil(SHARDS),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn shard(&self, token: &str) -> &Shard {
        use std::hash::BuildHasher as _;
        let hash = self.hasher.hash_one(token);
        // SHARDS is a power of two; the cast keeps the low bits.
        #[allow(clippy::cast_possible_truncation)]
        let index = (hash as usize) % SHARDS;
        &self.shards[index]
    }

    fn get(&self, token: &str) -> Option<Entry> {
        if self.capacity == 0 {
            return None;
        }
        let shard = lock(self.shard(token));
        shard.get(token).cloned()
    }

    fn insert(&self, token: &str, entry: Entry) {
        if self.capacity == 0 {
            return;
        }
        let mut shard = lock(self.shard(token));
        if shard.len() >= self.per_shard {
            shard.clear();
        }
        shard.insert(token.into(), entry);
    }

    fn remove(&self, token: &str) {
        let mut shard = lock(self.shard(token));
        shard.remove(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(endpoint("/greeter.v1.Greeter/SayHello"), "Greeter.SayHello");
        assert_eq!(endpoint("/Greeter/SayHello"), "Greeter.SayHello");
        assert_eq!(endpoint("/grpc.health.v1.Health/Check"), "Health.Check");
        assert_eq!(endpoint("/odd"), "odd");
    }

    #[test]
    fn bearer_header() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
    }
}
