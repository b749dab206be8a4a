//! `AuthLayer` and `Credentials` over a real tonic server on 127.0.0.1: each refusal with its
//! gRPC code, the caller's account in the handler, rules swapped and tokens revoked or their
//! key removed at run time, and the client layer attaching (and refreshing) tokens.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use http::uri::PathAndQuery;
use micro_core::auth::{
    self, Access, Account, Algorithm, AuthLayer, Credentials, Issuer, IssuerSource, KeySet,
    MemoryRevocations, Resource, Rule, RuleSet, SigningKey, TokenSource, Verifier,
};
use tonic::{Code, Status, body::Body, server::NamedService, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_prost::ProstCodec;
use tower_service::Service;

const ISS: &str = "https://auth.micro.test";
const AUD: &str = "micro";
const NAME: &str = "whoami";

// --- a tiny hand-written service: /test.v1.WhoAmI/{Who,Ping} answer the caller's id ---

#[derive(Clone)]
struct WhoAmI;

impl NamedService for WhoAmI {
    const NAME: &'static str = "test.v1.WhoAmI";
}

struct Handler;

impl tonic::server::UnaryService<()> for Handler {
    type Response = String;
    type Future = std::future::Ready<Result<tonic::Response<String>, Status>>;

    fn call(&mut self, request: tonic::Request<()>) -> Self::Future {
        let id = auth::account(&request).map_or_else(|| "anonymous".to_owned(), |a| a.id.clone());
        std::future::ready(Ok(tonic::Response::new(id)))
    }
}

impl Service<http::Request<Body>> for WhoAmI {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<String, ()>::default());
            Ok(grpc.unary(Handler, request).await)
        })
    }
}

// --- fixture ---

struct Fixture {
    addr: SocketAddr,
    issuer: Issuer,
    verifier: Arc<Verifier>,
    revocations: Arc<MemoryRevocations>,
    auth: AuthLayer,
    key: SigningKey,
}

fn rule(id: &str, scope: &str, endpoint: &str, access: Access, priority: i32) -> Rule {
    Rule {
        id: id.to_owned(),
        scope: scope.to_owned(),
        resource: Resource::service(NAME, endpoint),
        access,
        priority,
    }
}

fn rules() -> RuleSet {
    RuleSet::new([
        rule("readers", "who.read", "WhoAmI.Who", Access::Grant, 0),
        rule("public-ping", "", "WhoAmI.Ping", Access::Grant, 0),
        rule("banned", "banned", "*", Access::Deny, 10),
    ])
    .unwrap()
}

fn account(id: &str, scopes: &[&str]) -> Account {
    Account {
        id: id.to_owned(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..Account::default()
    }
}

async fn start() -> Fixture {
    let key = SigningKey::generate(Algorithm::EdDSA, "k1").unwrap();
    let mut keys = KeySet::new();
    keys.insert_signing(&key).unwrap();
    let copy = SigningKey::from_pkcs8(Algorithm::EdDSA, "k1", key.to_pkcs8()).unwrap();
    let revocations = Arc::new(MemoryRevocations::new());
    let verifier = Arc::new(Verifier::new(keys, ISS, AUD).with_revocations(revocations.clone()));
    let auth = AuthLayer::new(NAME, verifier.clone(), rules());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let router = tonic::transport::Server::builder()
        .layer(auth.clone())
        .add_service(health)
        .add_service(WhoAmI);
    tokio::spawn(
        router.serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Fixture {
        addr,
        issuer: Issuer::new(ISS, AUD, copy),
        verifier,
        revocations,
        auth,
        key,
    }
}

impl Fixture {
    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    fn token(&self, account: &Account) -> String {
        self.issuer.issue(account).unwrap().token
    }
}

async fn call<S>(service: S, method: &'static str, token: Option<&str>) -> Result<String, Status>
where
    S: tonic::client::GrpcService<Body>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <S::ResponseBody as http_body::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    let mut grpc = tonic::client::Grpc::new(service);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.into().to_string()))?;
    let mut request = tonic::Request::new(());
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let path = PathAndQuery::from_static(method);
    grpc.unary(request, path, ProstCodec::<(), String>::default())
        .await
        .map(tonic::Response::into_inner)
}

const WHO: &str = "/test.v1.WhoAmI/Who";
const PING: &str = "/test.v1.WhoAmI/Ping";

fn code(result: Result<String, Status>) -> Code {
    result.map_or_else(|s| s.code(), |_| Code::Ok)
}

// --- server ---

#[tokio::test]
async fn no_token_or_garbage_is_unauthenticated() {
    let f = start().await;
    let ch = f.channel().await;
    assert_eq!(
        code(call(ch.clone(), WHO, None).await),
        Code::Unauthenticated
    );
    let garbage = call(ch.clone(), WHO, Some("not.a.jwt")).await.unwrap_err();
    assert_eq!(garbage.code(), Code::Unauthenticated);
    assert!(!garbage.message().contains("not.a.jwt"), "{garbage:?}");
    // An invalid token is refused even on a public endpoint.
    assert_eq!(
        code(call(ch.clone(), PING, Some("garbage")).await),
        Code::Unauthenticated
    );
    // Not the Bearer scheme.
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(());
    request
        .metadata_mut()
        .insert("authorization", "Basic dXNlcjpwdw==".parse().unwrap());
    let basic = grpc
        .unary(
            request,
            PathAndQuery::from_static(WHO),
            ProstCodec::<(), String>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(basic.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn rules_grant_and_deny_and_handler_sees_account() {
    let f = start().await;
    let ch = f.channel().await;
    let reader = f.token(&account("ada", &["who.read"]));
    assert_eq!(call(ch.clone(), WHO, Some(&reader)).await.unwrap(), "ada");
    // Cached path: the same token again.
    assert_eq!(call(ch.clone(), WHO, Some(&reader)).await.unwrap(), "ada");

    let nobody = f.token(&account("bob", &[]));
    let denied = call(ch.clone(), WHO, Some(&nobody)).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("WhoAmI.Who"), "{denied:?}");
    assert!(!denied.message().contains(&nobody));

    let banned = f.token(&account("eve", &["who.read", "banned"]));
    let denied = call(ch.clone(), WHO, Some(&banned)).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("banned"), "{denied:?}");

    // Public rule: anonymous allowed, and an authenticated caller is still seen.
    assert_eq!(call(ch.clone(), PING, None).await.unwrap(), "anonymous");
    assert_eq!(call(ch, PING, Some(&nobody)).await.unwrap(), "bob");
}

#[tokio::test]
async fn health_is_public_by_default() {
    let f = start().await;
    let mut health = HealthClient::new(f.channel().await);
    let response = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(response.into_inner().status, 1); // SERVING
    // Reflection follows the rules: the layer refuses it for an anonymous caller.
    let status = f
        .auth
        .check(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            &http::HeaderMap::new(),
        )
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let public = f.auth.clone().public_reflection(true).public_health(false);
    assert!(
        public
            .check(
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                &http::HeaderMap::new()
            )
            .is_ok()
    );
    assert_eq!(
        public
            .check("/grpc.health.v1.Health/Check", &http::HeaderMap::new())
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
}

#[tokio::test]
async fn rules_swapped_at_run_time() {
    let f = start().await;
    let ch = f.channel().await;
    assert_eq!(
        code(call(ch.clone(), WHO, None).await),
        Code::Unauthenticated
    );
    f.auth
        .set_rules(RuleSet::new([rule("open", "", "WhoAmI.*", Access::Grant, 0)]).unwrap());
    assert_eq!(call(ch.clone(), WHO, None).await.unwrap(), "anonymous");
    f.auth.set_rules(RuleSet::default());
    assert_eq!(code(call(ch, PING, None).await), Code::Unauthenticated);
}

#[tokio::test]
async fn revoked_token_rejected_although_cached() {
    let f = start().await;
    let ch = f.channel().await;
    let token = f.issuer.issue(&account("ada", &["who.read"])).unwrap();
    assert_eq!(
        call(ch.clone(), WHO, Some(&token.token)).await.unwrap(),
        "ada"
    );
    f.revocations
        .revoke(token.claims.jti.clone(), token.claims.exp);
    let refused = call(ch, WHO, Some(&token.token)).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(refused.message().contains("revoked"), "{refused:?}");
}

#[tokio::test]
async fn revoked_account_rejected_although_cached() {
    let f = start().await;
    let ch = f.channel().await;
    let ada = f.issuer.issue(&account("ada", &["who.read"])).unwrap();
    let bob = f.issuer.issue(&account("bob", &["who.read"])).unwrap();
    assert_eq!(
        call(ch.clone(), WHO, Some(&ada.token)).await.unwrap(),
        "ada"
    );
    let iat = ada.claims.iat.unwrap();
    f.revocations.revoke_account("ada", iat + 1, ada.claims.exp);
    let refused = call(ch.clone(), WHO, Some(&ada.token)).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(refused.message().contains("revoked"), "{refused:?}");
    assert_eq!(call(ch, WHO, Some(&bob.token)).await.unwrap(), "bob");
}

#[test]
fn service_names_pick_the_resource_name_per_grpc_service() {
    let verifier = Arc::new(Verifier::new(KeySet::new(), ISS, AUD));
    let rules = RuleSet::new([Rule {
        id: "kv-public".to_owned(),
        scope: String::new(),
        resource: Resource::service("micro.kv", "Kv.*"),
        access: Access::Grant,
        priority: 0,
    }])
    .unwrap();
    let auth =
        AuthLayer::new("micro.server", verifier, rules).service_name("micro.kv.v1.Kv", "micro.kv");
    let none = http::HeaderMap::new();
    assert!(auth.check("/micro.kv.v1.Kv/Get", &none).is_ok());
    // Another gRPC service keeps the layer's name, which no rule grants.
    let refused = auth
        .check("/micro.config.v1.Config/Get", &none)
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(refused.message().contains("micro.server"), "{refused:?}");
    // A service of the same short name in another package is not the kv service.
    assert!(auth.check("/other.v1.Kv/Get", &none).is_err());
}

#[tokio::test]
async fn removed_key_rejects_cached_tokens() {
    let f = start().await;
    let ch = f.channel().await;
    let token = f.token(&account("ada", &["who.read"]));
    assert_eq!(call(ch.clone(), WHO, Some(&token)).await.unwrap(), "ada");
    // Rotation: a new key in, the old one out.
    let next = SigningKey::generate(Algorithm::EdDSA, "k2").unwrap();
    let mut keys = KeySet::new();
    keys.insert_signing(&next).unwrap();
    f.verifier.set_keys(keys.clone());
    assert_eq!(
        code(call(ch.clone(), WHO, Some(&token)).await),
        Code::Unauthenticated
    );
    // Back in the set: accepted again (nothing stale was cached).
    keys.insert_signing(&f.key).unwrap();
    f.verifier.set_keys(keys);
    assert_eq!(call(ch.clone(), WHO, Some(&token)).await.unwrap(), "ada");
    // Another key under the same kid: the cached token is verified again and fails.
    let impostor = SigningKey::generate(Algorithm::EdDSA, "k1").unwrap();
    let mut keys = KeySet::new();
    keys.insert_signing(&impostor).unwrap();
    f.verifier.set_keys(keys);
    let refused = call(ch, WHO, Some(&token)).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(refused.message().contains("signature"), "{refused:?}");
}

#[tokio::test]
async fn expired_token_rejected() {
    let f = start().await;
    let ch = f.channel().await;
    let past = SystemTime::now() - Duration::from_secs(3600);
    let old = f
        .issuer
        .issue_at(&account("ada", &["who.read"]), past)
        .unwrap();
    let refused = call(ch, WHO, Some(&old.token)).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(refused.message().contains("expired"), "{refused:?}");
}

// --- client ---

#[tokio::test]
async fn credentials_attach_token() {
    let f = start().await;
    let ch = f.channel().await;
    let fixed = Credentials::static_token(f.token(&account("ada", &["who.read"])));
    let with = tower::ServiceBuilder::new()
        .layer(fixed)
        .service(ch.clone());
    assert_eq!(call(with, WHO, None).await.unwrap(), "ada");

    let minted = Credentials::issuer(
        Issuer::new(
            ISS,
            AUD,
            SigningKey::from_pkcs8(Algorithm::EdDSA, "k1", f.key.to_pkcs8()).unwrap(),
        ),
        account("svc-a", &["who.read"]),
    );
    let with = tower::ServiceBuilder::new().layer(minted).service(ch);
    assert_eq!(call(with.clone(), WHO, None).await.unwrap(), "svc-a");
    assert_eq!(call(with, WHO, None).await.unwrap(), "svc-a");
}

#[tokio::test]
async fn issuer_source_refreshes_before_expiry() {
    let f = start().await;
    let start_secs = 1_800_000_000;
    let clock = Arc::new(AtomicU64::new(start_secs));
    let read = clock.clone();
    let source = IssuerSource::new(
        Issuer::new(
            ISS,
            AUD,
            SigningKey::from_pkcs8(Algorithm::EdDSA, "k1", f.key.to_pkcs8()).unwrap(),
        )
        .with_lifetime(Duration::from_secs(600)),
        account("svc-a", &[]),
    )
    .with_clock(move || UNIX_EPOCH + Duration::from_secs(read.load(Ordering::SeqCst)));
    let first = source.token().await.unwrap();
    // Shared while fresh.
    clock.store(start_secs + 400, Ordering::SeqCst);
    assert_eq!(source.token().await.unwrap(), first);
    // Refreshed once less than max(20 % of 600 s, 60 s) = 120 s remains.
    clock.store(start_secs + 481, Ordering::SeqCst);
    let second = source.token().await.unwrap();
    assert_ne!(second, first);
    let at = UNIX_EPOCH + Duration::from_secs(start_secs + 481);
    let claims = f.verifier.verify_at(&second, at).unwrap();
    assert_eq!(claims.exp, i64::try_from(start_secs + 481 + 600).unwrap());
    assert_eq!(source.token().await.unwrap(), second);
}

// --- through micro's own Service and Client ---

impl micro_core::codegen::DescribedService for WhoAmI {
    const DESCRIPTOR: &'static micro_core::codegen::ServiceDescriptor =
        &micro_core::codegen::ServiceDescriptor {
            name: "test.v1.WhoAmI",
            endpoints: &[],
            file_descriptor_set: &[],
        };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn micro_service_and_client_with_auth() {
    let f = start().await;
    let dir = tempfile::tempdir().unwrap();
    let registry: micro_core::registry::SharedRegistry =
        Arc::new(micro_core::registry::LocalRegistry::with_dir(dir.path().to_owned()).unwrap());
    let running = micro_core::Service::builder(NAME)
        .registry(registry.clone())
        .address("127.0.0.1:0")
        .layer(f.auth.clone())
        .add_service(WhoAmI)
        .shutdown_delay(Duration::ZERO)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let channel = Channel::from_shared(format!("http://{}", running.local_address()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(
        code(call(channel.clone(), WHO, None).await),
        Code::Unauthenticated
    );
    let mut health = HealthClient::new(channel.clone());
    let serving = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(serving.into_inner().status, 1);
    let credentials = Credentials::static_token(f.token(&account("ada", &["who.read"])));
    let with = tower::ServiceBuilder::new()
        .layer(credentials.clone())
        .service(channel);
    assert_eq!(call(with, WHO, None).await.unwrap(), "ada");
    // micro's own client, which finds the service in the registry.
    let client = micro_core::Client::new(registry);
    let with = tower::ServiceBuilder::new()
        .layer(credentials)
        .service(client.channel(NAME));
    assert_eq!(call(with, WHO, None).await.unwrap(), "ada");
    assert_eq!(
        code(call(client.channel(NAME), WHO, None).await),
        Code::Unauthenticated
    );
    running.shutdown().await.unwrap();
}
