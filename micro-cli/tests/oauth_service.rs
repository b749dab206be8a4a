//! The gateway as the OAuth2 entry point of the real auth service (`micro_platform::auth::
//! AuthService` over a memory store, registered as `micro.auth`), and the gateway's rules,
//! keys and revocations following it with `AuthSync`; everything over loopback. Includes
//! issue 7's acceptance 4 over HTTP: 1,000 wrong secrets for one client id get 429 with
//! `Retry-After` after the documented threshold while another client keeps getting tokens.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/auth.rs"]
mod auth_support;
mod support;

use std::{
    net::{IpAddr, Ipv4Addr},
    sync::Arc,
    time::Duration,
};

use auth_support::{
    BruteForceRun, Http, Reply, basic, memory_registry, oauth_token as token, serve, start_backends,
};
use http::{Method, StatusCode};
use micro::{
    Client, Service,
    api::Gateway,
    auth::{AccountKind, KeySet, Resource, Rule, Verifier},
    platform::auth::{AuthClient, AuthOptions, AuthService, AuthSync, BruteForce, NewAccount},
    registry::SharedRegistry,
    service::RunningService,
    store::MemoryStore,
};
use serde_json::Value;
use support::server::{MicroServer, start_micro_api};

const SVC_SECRET: &str = "svc-secret-0123456789";
const USER_PASSWORD: &str = "correct horse battery staple";

struct Setup {
    registry: SharedRegistry,
    client: AuthClient,
    sync: AuthSync,
    http: Http,
    gateway: std::net::SocketAddr,
    _auth: RunningService,
}

/// The auth service (password grant on, brute-force window of an hour so the test does not
/// depend on the machine's speed), accounts `svc` (service, scope `member`), `other`
/// (service) and `ada` (user), the rule "scope `member` may call greeter", and a gateway
/// following the service's keys, rules and revocations.
async fn setup() -> Setup {
    setup_on(memory_registry()).await
}

async fn setup_on(registry: SharedRegistry) -> Setup {
    let options = AuthOptions::new()
        .password_grant(true)
        .brute_force(BruteForce {
            window: Duration::from_secs(3600),
            ..BruteForce::default()
        });
    let service = AuthService::new(Arc::new(MemoryStore::new()), options)
        .await
        .unwrap();
    let running = Service::builder("micro.auth")
        .registry(registry.clone())
        .address("127.0.0.1:0")
        .add_service(service.into_server())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let client = AuthClient::from_client(&Client::new(registry.clone()));
    for (id, kind, scopes, secret) in [
        ("svc", AccountKind::Service, vec!["member"], SVC_SECRET),
        ("other", AccountKind::Service, vec![], SVC_SECRET),
        ("ada", AccountKind::User, vec!["member"], USER_PASSWORD),
    ] {
        client
            .generate(NewAccount {
                id: id.into(),
                kind,
                scopes: scopes.into_iter().map(str::to_owned).collect(),
                secret: Some(secret.into()),
                ..NewAccount::default()
            })
            .await
            .unwrap();
    }
    client
        .create_rule(&Rule {
            id: "members".into(),
            scope: "member".into(),
            resource: Resource::service("greeter", "*"),
            access: micro::auth::Access::Grant,
            priority: 0,
        })
        .await
        .unwrap();
    let sync =
        AuthSync::start_with_interval(client.clone(), "micro.api", Duration::from_millis(50))
            .await
            .unwrap();
    let gateway = Gateway::builder()
        .registry(registry.clone())
        .auth(sync.layer())
        .build()
        .unwrap();
    let gateway = serve(gateway).await;
    Setup {
        registry,
        client,
        sync,
        http: Http::new(gateway),
        gateway,
        _auth: running,
    }
}

/// A token for the client `id` with its secret in `authorization: Basic`, asserted issued.
async fn client_credentials(http: &Http, id: &str, secret: &str) -> Value {
    ok(&token(
        http,
        &[("authorization", &basic(id, secret))],
        "grant_type=client_credentials",
    )
    .await)
}

fn ok(reply: &Reply) -> Value {
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("pragma"), Some("no-cache"));
    let body = reply.json();
    assert_eq!(body["token_type"], "Bearer", "{body}");
    assert!(body["expires_in"].as_i64().unwrap() > 0, "{body}");
    body
}

fn oauth_error(reply: &Reply, status: u16, error: &str) {
    assert_eq!(reply.status.as_u16(), status, "{reply:?}");
    assert_eq!(reply.json()["error"], error, "{reply:?}");
}

async fn hello(http: &Http, token: Option<&str>) -> Reply {
    http.call_with_token(
        Method::POST,
        "/greeter/Greeter/SayHello",
        token,
        r#"{"name":"svc"}"#,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_services_tokens_through_the_gateway() {
    let mut setup = setup().await;
    let http = setup.http.clone();
    let _backends = start_backends(&setup.registry, None).await;

    // client_credentials, by Basic and by the body: no refresh token.
    let body = client_credentials(&http, "svc", SVC_SECRET).await;
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert_eq!(body["scope"], "member");
    let access = body["access_token"].as_str().unwrap().to_owned();
    let body = ok(&token(
        &http,
        &[],
        &format!("grant_type=client_credentials&client_id=svc&client_secret={SVC_SECRET}"),
    )
    .await);
    assert_eq!(body["scope"], "member");

    // The token opens what the service's rules allow, through the gateway.
    assert_eq!(hello(&http, None).await.status, StatusCode::UNAUTHORIZED);
    let reply = hello(&http, Some(&access)).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let other = client_credentials(&http, "other", SVC_SECRET).await;
    let reply = hello(&http, other["access_token"].as_str()).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{reply:?}");

    // The JWK Set the gateway serves verifies the token.
    let jwks = http
        .request(Method::GET, "/.well-known/jwks.json", &[], "")
        .await;
    assert_eq!(jwks.status, StatusCode::OK, "{jwks:?}");
    assert_eq!(
        jwks.header("content-type"),
        Some("application/jwk-set+json")
    );
    let keys = KeySet::from_json(std::str::from_utf8(&jwks.body).unwrap()).unwrap();
    let info = setup.client.jwks().await.unwrap();
    let verifier = Verifier::new(keys, info.issuer, info.audience);
    assert_eq!(verifier.verify(&access).unwrap().id, "svc");

    // password (enabled here) and refresh_token; a refresh token is single use.
    let password = format!(
        "grant_type=password&username=ada&password={}",
        USER_PASSWORD.replace(' ', "+")
    );
    let body = ok(&token(&http, &[], &password).await);
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    let body = ok(&token(
        &http,
        &[],
        &format!("grant_type=refresh_token&refresh_token={refresh}"),
    )
    .await);
    assert_ne!(body["refresh_token"].as_str().unwrap(), refresh);
    let reused = token(
        &http,
        &[],
        &format!("grant_type=refresh_token&refresh_token={refresh}"),
    )
    .await;
    oauth_error(&reused, 400, "invalid_grant");

    // Refusals as RFC 6749 errors.
    let wrong = token(
        &http,
        &[("authorization", &basic("svc", "wrong-secret-0123456789"))],
        "grant_type=client_credentials",
    )
    .await;
    oauth_error(&wrong, 401, "invalid_client");
    assert!(
        wrong
            .header("www-authenticate")
            .unwrap()
            .starts_with("Basic ")
    );
    let scope = token(
        &http,
        &[("authorization", &basic("svc", SVC_SECRET))],
        "grant_type=client_credentials&scope=admin",
    )
    .await;
    oauth_error(&scope, 400, "invalid_scope");
    let user_as_client = token(
        &http,
        &[("authorization", &basic("ada", USER_PASSWORD))],
        "grant_type=client_credentials",
    )
    .await;
    oauth_error(&user_as_client, 401, "invalid_client");

    // A revocation at the service reaches the gateway with the next sync.
    setup.client.revoke(&access).await.unwrap();
    assert!(setup.sync.next_poll().await);
    assert!(setup.sync.next_poll().await);
    let reply = hello(&http, Some(&access)).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{reply:?}");
    assert!(
        reply
            .header("www-authenticate")
            .unwrap()
            .contains("invalid_token")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_over_http_gets_429_while_another_client_gets_tokens() {
    let setup = setup().await;
    let attacker = setup.http.clone();
    let valid = Http::from_local(setup.gateway, Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
    let threshold = BruteForce::default().per_id as usize;
    // Another client, from another address, is not affected.
    let other = format!("grant_type=client_credentials&client_id=other&client_secret={SVC_SECRET}");
    let (refused, limited, issued) = BruteForceRun {
        attacker: &attacker,
        id: "svc",
        guess: &|attempt| format!("guess-{attempt:04}-0123456789"),
        refused: &|reply| oauth_error(reply, 401, "invalid_client"),
        limited: &|reply, attempt| {
            oauth_error(reply, 429, "slow_down");
            let retry: u64 = reply
                .header("retry-after")
                .unwrap_or_else(|| panic!("attempt {attempt}: no Retry-After"))
                .parse()
                .unwrap();
            assert!((1..=3600).contains(&retry), "Retry-After {retry}");
        },
        valid: &valid,
        valid_form: &other,
        issued: &|reply, _| {
            ok(reply);
        },
    }
    .run()
    .await;
    println!(
        "brute force over HTTP: {refused} × 401, {limited} × 429; other client: {issued} tokens"
    );
    assert_eq!(refused, threshold, "401s before the lock");
    assert_eq!(limited, 1000 - threshold);
    assert_eq!(issued, 20);
    // The right secret for the locked id is refused too until the window ends.
    let locked = token(
        &attacker,
        &[("authorization", &basic("svc", SVC_SECRET))],
        "grant_type=client_credentials",
    )
    .await;
    oauth_error(&locked, 429, "slow_down");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn micro_api_follows_the_auth_service() {
    let registry = support::RegistryDir::new();
    let setup = setup_on(registry.registry()).await;
    let _greeter = support::start_test_greeter(registry.registry()).await;
    let (_api, addr) =
        start_micro_api(registry.url(), &["--broker", "off", "--auth", "service"]).await;
    let http = Http::to(&addr);
    assert_eq!(hello(&http, None).await.status, StatusCode::UNAUTHORIZED);
    let body = client_credentials(&http, "svc", SVC_SECRET).await;
    let reply = hello(&http, body["access_token"].as_str()).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    drop(setup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn micro_servers_gateway_is_the_oauth_entry_point_and_enforces_its_rules() {
    let server = MicroServer::builder()
        .api()
        .args(&["--store", "memory"])
        .start()
        .await;
    let secret = server.admin_secret();
    let http = Http::to(server.api_addr());

    let body = client_credentials(&http, "admin", secret.trim()).await;
    let admin = body["access_token"].as_str().unwrap().to_owned();
    // Managing accounts is for admins (the seeded rules), at the gateway as on gRPC.
    let list = |token: Option<String>| {
        let http = http.clone();
        async move {
            http.call_with_token(
                Method::POST,
                "/micro.auth/Auth/ListAccounts",
                token.as_deref(),
                "{}",
            )
            .await
        }
    };
    let anonymous = list(None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{anonymous:?}");
    assert_eq!(anonymous.json()["code"], "UNAUTHENTICATED");
    let reply = list(Some(admin)).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.json()["accounts"][0]["id"], "admin", "{reply:?}");
}
