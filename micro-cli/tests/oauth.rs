//! The gateway's OAuth2 entry point over real sockets on 127.0.0.1: `POST /oauth/token`
//! and `GET /.well-known/jwks.json` in front of an auth service registered as `micro.auth`,
//! here a small tonic server implementing the generated `Auth` trait (with the auth
//! service's documented behaviour for tokens, refusals and brute-force limits).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/auth.rs"]
mod auth_support;
mod support;

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use auth_support::{
    BruteForceRun, Http, Keys, Reply, basic, memory_registry, oauth_token as token, rule, serve,
    start_backends,
};
use http::{Method, StatusCode};
use micro::{
    Service,
    api::Gateway,
    auth::{Access, AuthLayer, Jwks, RuleSet},
    platform::proto::auth::v1::{self as pb, auth_server},
    registry::SharedRegistry,
    service::RunningService,
};
use serde_json::Value;
use tonic::{Request, Response, Status};

/// Failed attempts per account id or source address before the fake refuses with
/// RESOURCE_EXHAUSTED.
const THRESHOLD: usize = 10;
const RETRY_AFTER: &str = "60";

/// The auth service as the gateway sees it: `Token` and `Jwks`; the rest unimplemented.
#[derive(Clone)]
struct FakeAuth {
    keys: Arc<Keys>,
    /// id → (secret, scopes)
    accounts: Arc<HashMap<&'static str, (&'static str, Vec<&'static str>)>>,
    failures: Arc<Mutex<HashMap<String, usize>>>,
    /// The `x-forwarded-for` of each `Token` call, in order.
    forwarded: Arc<Mutex<Vec<String>>>,
    jwks_calls: Arc<AtomicUsize>,
}

impl FakeAuth {
    fn new(keys: Arc<Keys>) -> Self {
        let accounts = HashMap::from([
            ("svc-a", ("secret-a:with=odd&chars", vec!["greeter.read"])),
            ("svc-b", ("secret-b", vec!["member", "books.read"])),
        ]);
        Self {
            keys,
            accounts: Arc::new(accounts),
            failures: Arc::default(),
            forwarded: Arc::default(),
            jwks_calls: Arc::default(),
        }
    }

    fn limited(&self, keys: &[&str]) -> Result<(), Status> {
        let failures = self.failures.lock().unwrap();
        if keys
            .iter()
            .any(|key| failures.get(*key).copied().unwrap_or(0) >= THRESHOLD)
        {
            let mut status = Status::resource_exhausted("too many failed attempts; retry later");
            status
                .metadata_mut()
                .insert("retry-after", RETRY_AFTER.parse().unwrap());
            return Err(status);
        }
        Ok(())
    }

    fn issue(&self, id: &str, scopes: &[&str], refresh: bool) -> pb::TokenResponse {
        let issued = self
            .keys
            .issuer
            .issue(&micro::auth::Account {
                id: id.to_owned(),
                scopes: scopes.iter().map(|&s| s.to_owned()).collect(),
                ..micro::auth::Account::default()
            })
            .unwrap();
        pb::TokenResponse {
            access_token: issued.token,
            token_type: "Bearer".into(),
            expires_in: 900,
            refresh_token: if refresh {
                "r-next".into()
            } else {
                String::new()
            },
            scopes: scopes.iter().map(|&s| s.to_owned()).collect(),
        }
    }
}

#[tonic::async_trait]
impl auth_server::Auth for FakeAuth {
    async fn token(
        &self,
        request: Request<pb::TokenRequest>,
    ) -> Result<Response<pb::TokenResponse>, Status> {
        let source = request
            .metadata()
            .get("x-forwarded-for")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        self.forwarded.lock().unwrap().push(source.clone());
        let request = request.into_inner();
        match request.grant_type.as_str() {
            "client_credentials" => {
                let by_id = format!("id:{}", request.id);
                let by_source = format!("ip:{source}");
                self.limited(&[&by_id, &by_source])?;
                match self.accounts.get(request.id.as_str()) {
                    Some((secret, scopes)) if *secret == request.secret => {
                        let mut granted = scopes.clone();
                        if !request.scopes.is_empty() {
                            if let Some(missing) = request
                                .scopes
                                .iter()
                                .find(|s| !scopes.contains(&s.as_str()))
                            {
                                return Err(Status::invalid_argument(format!(
                                    "scope {missing} is not held by the account"
                                )));
                            }
                            granted.retain(|s| request.scopes.iter().any(|r| r == s));
                        }
                        Ok(Response::new(self.issue(&request.id, &granted, false)))
                    }
                    _ => {
                        let mut failures = self.failures.lock().unwrap();
                        *failures.entry(by_id).or_default() += 1;
                        *failures.entry(by_source).or_default() += 1;
                        Err(Status::unauthenticated("invalid client credentials"))
                    }
                }
            }
            "refresh_token" if request.refresh_token == "r-good" => {
                Ok(Response::new(self.issue("ada", &["member"], true)))
            }
            "refresh_token" => Err(Status::unauthenticated(
                "the refresh token is unknown, expired or revoked",
            )),
            "password" => Err(Status::failed_precondition(
                "the password grant is not enabled",
            )),
            other => Err(Status::invalid_argument(format!("grant_type {other}"))),
        }
    }

    async fn jwks(
        &self,
        _request: Request<pb::JwksRequest>,
    ) -> Result<Response<pb::JwksResponse>, Status> {
        self.jwks_calls.fetch_add(1, Ordering::SeqCst);
        let jwks = Jwks {
            keys: vec![self.keys.key.public_jwk()],
        };
        Ok(Response::new(pb::JwksResponse {
            jwks: serde_json::to_string(&jwks).unwrap(),
            current_kid: "k1".into(),
            issuer: auth_support::ISS.into(),
            audience: auth_support::AUD.into(),
        }))
    }

    async fn generate(
        &self,
        _: Request<pb::GenerateRequest>,
    ) -> Result<Response<pb::GenerateResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_accounts(
        &self,
        _: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn delete_account(
        &self,
        _: Request<pb::DeleteAccountRequest>,
    ) -> Result<Response<pb::DeleteAccountResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn rotate_secret(
        &self,
        _: Request<pb::RotateSecretRequest>,
    ) -> Result<Response<pb::RotateSecretResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn inspect(
        &self,
        _: Request<pb::InspectRequest>,
    ) -> Result<Response<pb::InspectResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn revoke(
        &self,
        _: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_revocations(
        &self,
        _: Request<pb::ListRevocationsRequest>,
    ) -> Result<Response<pb::ListRevocationsResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn rotate_keys(
        &self,
        _: Request<pb::RotateKeysRequest>,
    ) -> Result<Response<pb::RotateKeysResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn create_rule(
        &self,
        _: Request<pb::CreateRuleRequest>,
    ) -> Result<Response<pb::CreateRuleResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn delete_rule(
        &self,
        _: Request<pb::DeleteRuleRequest>,
    ) -> Result<Response<pb::DeleteRuleResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn list_rules(
        &self,
        _: Request<pb::ListRulesRequest>,
    ) -> Result<Response<pb::ListRulesResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

struct Setup {
    keys: Arc<Keys>,
    fake: FakeAuth,
    registry: SharedRegistry,
    gateway: SocketAddr,
    _auth: RunningService,
}

async fn setup() -> Setup {
    let keys = Arc::new(Keys::new());
    let registry = memory_registry();
    let fake = FakeAuth::new(keys.clone());
    let running = Service::builder("micro.auth")
        .registry(registry.clone())
        .address("127.0.0.1:0")
        .add_service(auth_server::AuthServer::new(fake.clone()))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let rules = RuleSet::new([rule("members", "member", "*", "*", Access::Grant, 0)]).unwrap();
    let gateway = Gateway::builder()
        .registry(registry.clone())
        .auth(AuthLayer::new("micro.api", keys.verifier.clone(), rules))
        .build()
        .unwrap();
    Setup {
        keys,
        fake,
        gateway: serve(gateway).await,
        registry,
        _auth: running,
    }
}

/// Asserts an RFC 6749 §5.2 error.
fn oauth_error(reply: &Reply, status: u16, error: &str) -> Value {
    assert_eq!(reply.status.as_u16(), status, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let body = reply.json();
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_give_a_token_the_gateway_accepts() {
    let setup = setup().await;
    let http = Http::new(setup.gateway);
    let _backends = start_backends(&setup.registry, None).await;

    // client_secret_post, with a scope limit.
    let reply = token(
        &http,
        &[],
        "grant_type=client_credentials&client_id=svc-b&client_secret=secret-b&scope=member",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("pragma"), Some("no-cache"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "member");
    assert!(body.get("refresh_token").is_none(), "{body}");
    let access = body["access_token"].as_str().unwrap().to_owned();
    assert_eq!(setup.keys.verifier.verify(&access).unwrap().id, "svc-b");

    // The token opens a protected method through the gateway; without it, 401.
    let call = |token: Option<String>| {
        let http = http.clone();
        async move {
            http.call_with_token(
                Method::POST,
                "/greeter/Greeter/SayHello",
                token.as_deref(),
                r#"{"name":"b"}"#,
            )
            .await
        }
    };
    assert_eq!(call(None).await.status, StatusCode::UNAUTHORIZED);
    let reply = call(Some(access)).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.json()["message"], "Hello, b!");

    // client_secret_basic, id and secret form-urlencoded (RFC 6749 §2.3.1).
    let reply = token(
        &http,
        &[("authorization", &basic("svc-a", "secret-a:with=odd&chars"))],
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.json()["scope"], "greeter.read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_rfc_6749_errors() {
    let setup = setup().await;
    let http = Http::new(setup.gateway);

    let wrong_basic = token(
        &http,
        &[("authorization", &basic("svc-b", "wrong"))],
        "grant_type=client_credentials",
    )
    .await;
    oauth_error(&wrong_basic, 401, "invalid_client");
    assert!(
        wrong_basic
            .header("www-authenticate")
            .unwrap()
            .starts_with("Basic "),
        "{wrong_basic:?}"
    );
    let wrong_post = token(
        &http,
        &[],
        "grant_type=client_credentials&client_id=svc-b&client_secret=wrong",
    )
    .await;
    oauth_error(&wrong_post, 401, "invalid_client");
    assert_eq!(wrong_post.header("www-authenticate"), None);

    let both = token(
        &http,
        &[("authorization", &basic("svc-b", "secret-b"))],
        "grant_type=client_credentials&client_secret=secret-b",
    )
    .await;
    oauth_error(&both, 400, "invalid_request");

    let scope = token(
        &http,
        &[],
        "grant_type=client_credentials&client_id=svc-b&client_secret=secret-b&scope=admin",
    )
    .await;
    oauth_error(&scope, 400, "invalid_scope");

    let unknown = token(&http, &[], "grant_type=urn%3Aexample%3Aother").await;
    oauth_error(&unknown, 400, "unsupported_grant_type");
    let password = token(&http, &[], "grant_type=password&username=ada&password=pw").await;
    oauth_error(&password, 400, "unsupported_grant_type");

    let refresh = token(&http, &[], "grant_type=refresh_token&refresh_token=r-bad").await;
    oauth_error(&refresh, 400, "invalid_grant");
    let refreshed = token(&http, &[], "grant_type=refresh_token&refresh_token=r-good").await;
    assert_eq!(refreshed.status, StatusCode::OK, "{refreshed:?}");
    assert_eq!(refreshed.json()["refresh_token"], "r-next");

    let json = http
        .request(
            Method::POST,
            "/oauth/token",
            &[("content-type", "application/json")],
            r#"{"grant_type":"client_credentials"}"#,
        )
        .await;
    oauth_error(&json, 400, "invalid_request");
    let large = token(
        &http,
        &[],
        &format!("grant_type=client_credentials&x={}", "a".repeat(20_000)),
    )
    .await;
    oauth_error(&large, 413, "invalid_request");
    let get = http.request(Method::GET, "/oauth/token", &[], "").await;
    oauth_error(&get, 405, "invalid_request");
    assert_eq!(get.header("allow"), Some("POST"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_learns_the_tcp_peer_never_a_header() {
    let setup = setup().await;
    let ip2 = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    for (local, want) in [(None, "127.0.0.1"), (Some(ip2), "127.0.0.2")] {
        let http = Http::from_local(setup.gateway, local);
        let reply = token(
            &http,
            &[
                ("x-forwarded-for", "203.0.113.9"),
                ("forwarded", "for=203.0.113.9"),
            ],
            "grant_type=client_credentials&client_id=svc-b&client_secret=secret-b",
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert_eq!(
            setup
                .fake
                .forwarded
                .lock()
                .unwrap()
                .last()
                .map(String::as_str),
            Some(want)
        );
    }
    // Nor through the RPC form of `Auth.Token` on a gateway whose rules let it through:
    // neither the header nor `grpc-metadata-x-forwarded-for` reach the service.
    let open = Gateway::builder()
        .registry(setup.registry.clone())
        .allow_header("x-forwarded-for")
        .build()
        .unwrap();
    let http = Http::from_local(serve(open).await, Some(ip2));
    let reply = http
        .request(
            Method::POST,
            "/micro.auth/Auth/Token",
            &[
                ("content-type", "application/json"),
                ("x-forwarded-for", "203.0.113.9"),
                ("grpc-metadata-x-forwarded-for", "203.0.113.10"),
            ],
            r#"{"grantType":"client_credentials","id":"svc-b","secret":"secret-b"}"#,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let forwarded = setup.fake.forwarded.lock().unwrap().clone();
    assert_eq!(forwarded.last().map(String::as_str), Some("127.0.0.2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_gets_429_while_a_valid_client_gets_tokens() {
    let setup = setup().await;
    let attacker = Http::new(setup.gateway);
    let valid = Http::from_local(setup.gateway, Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
    let (refused, limited, issued) = BruteForceRun {
        attacker: &attacker,
        id: "svc-a",
        guess: &|attempt| format!("guess-{attempt}"),
        refused: &|reply| {
            oauth_error(reply, 401, "invalid_client");
        },
        limited: &|reply, _| {
            oauth_error(reply, 429, "slow_down");
            assert_eq!(reply.header("retry-after"), Some(RETRY_AFTER));
        },
        valid: &valid,
        valid_form: "grant_type=client_credentials&client_id=svc-b&client_secret=secret-b",
        issued: &|reply, attempt| {
            assert_eq!(reply.status, StatusCode::OK, "attempt {attempt}: {reply:?}");
        },
    }
    .run()
    .await;
    println!("brute force: {refused} × 401, {limited} × 429; valid client: {issued} tokens");
    assert_eq!(refused, THRESHOLD);
    assert_eq!(limited, 1000 - THRESHOLD);
    assert_eq!(issued, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwks_is_served_and_cached() {
    let setup = setup().await;
    let http = Http::new(setup.gateway);
    let first = http
        .request(Method::GET, "/.well-known/jwks.json", &[], "")
        .await;
    assert_eq!(first.status, StatusCode::OK, "{first:?}");
    assert_eq!(
        first.header("content-type"),
        Some("application/jwk-set+json")
    );
    let jwks: Jwks = serde_json::from_slice(&first.body).unwrap();
    assert_eq!(jwks.keys, vec![setup.keys.key.public_jwk()]);
    let second = http
        .request(Method::GET, "/.well-known/jwks.json", &[], "")
        .await;
    assert_eq!(second.body, first.body);
    assert_eq!(setup.fake.jwks_calls.load(Ordering::SeqCst), 1, "cached");
    let post = http
        .request(Method::POST, "/.well-known/jwks.json", &[], "")
        .await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_auth_service_the_endpoints_say_so() {
    let gateway = Gateway::builder()
        .registry(memory_registry())
        .build()
        .unwrap();
    let http = Http::new(serve(gateway).await);
    let reply = token(
        &http,
        &[],
        "grant_type=client_credentials&client_id=svc-b&client_secret=secret-b",
    )
    .await;
    let body = oauth_error(&reply, 503, "temporarily_unavailable");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("micro.auth"),
        "{body}"
    );
    let jwks = http
        .request(Method::GET, "/.well-known/jwks.json", &[], "")
        .await;
    assert_eq!(jwks.status, StatusCode::SERVICE_UNAVAILABLE, "{jwks:?}");
    assert_eq!(jwks.json()["code"], "UNAVAILABLE");
}
