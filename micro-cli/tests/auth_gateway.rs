//! The gateway behind auth, over real sockets on 127.0.0.1: the same decisions through
//! HTTP as through gRPC (issue 7, acceptance 3), the JWT attack matrix both ways
//! (acceptance 1), and `micro api --auth-jwks`. The open paths are in `auth_paths.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/auth.rs"]
mod auth_support;
mod support;

use std::time::{Duration, SystemTime};

use auth_support::{
    AUD, Http, ISS, Keys, Reply, b64, bookshelf_pb as shelf, craft, ed25519, grpc_channel, part,
    rule, start_backends, start_gateway, token_from, with_token,
};
use http::{Method, StatusCode};
use micro::auth::{Access, AuthLayer, KeySet, RuleSet, SigningKey};
use ring::hmac;
use serde_json::{Value, json};
use support::pb as greeter;
use support::server::start_micro_api;
use tonic::Code;

// === acceptance 3: gRPC and HTTP agree ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Public,
    Scoped,
    Denied,
}

/// Public: `Greeter.SayHello`, `Bookshelf.GetShelf`. Scoped: `Greeter.StreamHellos` needs
/// `greeter.stream`, `Bookshelf.GetBook` needs `books.read`. Denied: `DeleteShelf` for any
/// account, admins too. Admins may call everything else.
fn matrix_rules() -> RuleSet {
    RuleSet::new([
        rule(
            "public-hello",
            "",
            "greeter",
            "Greeter.SayHello",
            Access::Grant,
            10,
        ),
        rule(
            "public-shelf",
            "",
            "bookshelf",
            "Bookshelf.GetShelf",
            Access::Grant,
            10,
        ),
        rule(
            "stream",
            "greeter.stream",
            "greeter",
            "Greeter.StreamHellos",
            Access::Grant,
            10,
        ),
        rule(
            "books",
            "books.read",
            "bookshelf",
            "Bookshelf.GetBook",
            Access::Grant,
            10,
        ),
        rule(
            "no-delete",
            "*",
            "*",
            "Bookshelf.DeleteShelf",
            Access::Deny,
            100,
        ),
        rule("admin", "admin", "*", "*", Access::Grant, 0),
    ])
    .unwrap()
}

/// What the rules say, written out independently of them.
fn expected(kind: Kind, caller: &str) -> Code {
    match (kind, caller) {
        (_, "garbage") => Code::Unauthenticated,
        (Kind::Public, _) => Code::Ok,
        (_, "anonymous") => Code::Unauthenticated,
        (Kind::Scoped, "scoped" | "admin") => Code::Ok,
        _ => Code::PermissionDenied,
    }
}

fn http_status(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        other => panic!("no HTTP status expected for {other:?}"),
    }
}

/// One endpoint: how to call it by gRPC, and its HTTP spellings (RPC and REST forms).
struct Endpoint {
    name: &'static str,
    kind: Kind,
    http: Vec<(Method, &'static str, &'static str)>,
}

fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint {
            name: "Greeter.SayHello",
            kind: Kind::Public,
            http: vec![
                (Method::POST, "/greeter/Greeter/SayHello", r#"{"name":"a"}"#),
                (Method::POST, "/greeter/SayHello", r#"{"name":"a"}"#),
            ],
        },
        Endpoint {
            name: "Greeter.StreamHellos",
            kind: Kind::Scoped,
            http: vec![(
                Method::POST,
                "/greeter/greeter.v1.Greeter/StreamHellos",
                r#"{"name":"a","count":2}"#,
            )],
        },
        Endpoint {
            name: "Bookshelf.GetShelf",
            kind: Kind::Public,
            http: vec![
                (
                    Method::POST,
                    "/bookshelf/Bookshelf/GetShelf",
                    r#"{"name":"shelves/s1"}"#,
                ),
                (Method::GET, "/v1/shelves/s1", ""),
            ],
        },
        Endpoint {
            name: "Bookshelf.GetBook",
            kind: Kind::Scoped,
            http: vec![
                (
                    Method::POST,
                    "/bookshelf/Bookshelf/GetBook",
                    r#"{"name":"shelves/s1/books/b1"}"#,
                ),
                (Method::GET, "/v1/shelves/s1/books/b1", ""),
                (Method::GET, "/v1/books/b1", ""),
            ],
        },
        Endpoint {
            name: "Bookshelf.DeleteShelf",
            kind: Kind::Denied,
            http: vec![
                (
                    Method::POST,
                    "/bookshelf/Bookshelf/DeleteShelf",
                    r#"{"name":"shelves/s1"}"#,
                ),
                (Method::DELETE, "/v1/shelves/s1", ""),
            ],
        },
    ]
}

/// The gRPC code of calling `endpoint` straight on its backend with `token`.
async fn grpc_code(
    greeter_channel: &tonic::transport::Channel,
    shelf_channel: &tonic::transport::Channel,
    endpoint: &str,
    token: Option<&str>,
) -> Code {
    let mut hello = greeter::greeter_client::GreeterClient::new(greeter_channel.clone());
    let mut books = shelf::bookshelf_client::BookshelfClient::new(shelf_channel.clone());
    let shelf_name = || shelf::GetShelfRequest {
        name: "shelves/s1".into(),
    };
    let result = match endpoint {
        "Greeter.SayHello" => hello
            .say_hello(with_token(support::hello("a"), token))
            .await
            .map(drop),
        "Greeter.StreamHellos" => {
            let request = greeter::StreamHellosRequest {
                name: "a".into(),
                count: 2,
                interval_ms: 0,
            };
            match hello.stream_hellos(with_token(request, token)).await {
                Ok(reply) => {
                    let mut stream = reply.into_inner();
                    let mut result = Ok(());
                    while let Some(item) = stream.message().await.transpose() {
                        if let Err(status) = item {
                            result = Err(status);
                            break;
                        }
                    }
                    result
                }
                Err(status) => Err(status),
            }
        }
        "Bookshelf.GetShelf" => books
            .get_shelf(with_token(shelf_name(), token))
            .await
            .map(drop),
        "Bookshelf.GetBook" => {
            let request = shelf::GetBookRequest {
                name: "shelves/s1/books/b1".into(),
            };
            books.get_book(with_token(request, token)).await.map(drop)
        }
        "Bookshelf.DeleteShelf" => {
            let request = shelf::DeleteShelfRequest {
                name: "shelves/s1".into(),
            };
            books
                .delete_shelf(with_token(request, token))
                .await
                .map(drop)
        }
        other => panic!("unknown endpoint {other}"),
    };
    match result {
        Ok(()) => Code::Ok,
        Err(status) => status.code(),
    }
}

async fn http_call(
    http: &Http,
    (method, path, body): &(Method, &str, &str),
    token: Option<&str>,
) -> Reply {
    http.call_with_token(method.clone(), path, token, body.to_string())
        .await
}

/// Asserts the JSON error of a refusal and its `WWW-Authenticate` challenge.
fn assert_refusal(reply: &Reply, code: Code, token_sent: bool, context: &str) {
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{context}"
    );
    let body = reply.json();
    let name = match code {
        Code::Unauthenticated => "UNAUTHENTICATED",
        _ => "PERMISSION_DENIED",
    };
    assert_eq!(body["code"], name, "{context}: {body}");
    assert!(
        body["message"].as_str().unwrap().len() > 10,
        "{context}: {body}"
    );
    assert!(body["details"].is_array(), "{context}: {body}");
    let challenge = reply
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("{context}: no WWW-Authenticate"));
    assert!(challenge.starts_with("Bearer "), "{context}: {challenge}");
    match code {
        Code::Unauthenticated if token_sent => {
            assert!(
                challenge.contains(r#"error="invalid_token""#),
                "{context}: {challenge}"
            );
        }
        Code::Unauthenticated => assert!(!challenge.contains("error="), "{context}: {challenge}"),
        _ => assert!(
            challenge.contains(r#"error="insufficient_scope""#),
            "{context}: {challenge}"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_http_agree_on_every_decision() {
    let keys = Keys::new();
    let registry = auth_support::memory_registry();
    let verifier = keys.verifier.clone();
    let layer = move |name: &str| AuthLayer::new(name, verifier.clone(), matrix_rules());
    let backends = start_backends(&registry, Some(&layer)).await;
    let gateway = start_gateway(
        &registry,
        Some(AuthLayer::new(
            "micro.api",
            keys.verifier.clone(),
            matrix_rules(),
        )),
    )
    .await;
    let http = Http::new(gateway);
    let greeter_channel = grpc_channel(&backends.greeter_addr).await;
    let shelf_channel = grpc_channel(&backends.bookshelf_addr).await;

    let callers: Vec<(&str, Option<String>)> = vec![
        ("anonymous", None),
        ("garbage", Some("not.a-valid.token".to_owned())),
        ("unscoped", Some(keys.token(&["other"]))),
        (
            "scoped",
            Some(keys.token(&["greeter.stream", "books.read"])),
        ),
        ("admin", Some(keys.token(&["admin"]))),
    ];
    // Loads the bookshelf's schemas, so its REST routes are known.
    let warm = http_call(&http, &endpoints()[2].http[0], None).await;
    assert_eq!(warm.status, StatusCode::OK, "{warm:?}");

    let mut checked = 0;
    for endpoint in endpoints() {
        for (caller, token) in &callers {
            let token = token.as_deref();
            let want = expected(endpoint.kind, caller);
            let grpc = grpc_code(&greeter_channel, &shelf_channel, endpoint.name, token).await;
            assert_eq!(grpc, want, "gRPC {} as {caller}", endpoint.name);
            for route in &endpoint.http {
                let context = format!("{} {} as {caller}", route.0, route.1);
                let reply = http_call(&http, route, token).await;
                assert_eq!(
                    reply.status.as_u16(),
                    http_status(grpc),
                    "{context}: {:?}",
                    String::from_utf8_lossy(&reply.body)
                );
                if grpc != Code::Ok {
                    assert_refusal(&reply, grpc, token.is_some(), &context);
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 5 * 10);
    // The backends were called only for what was allowed: gateway and backend agree, so a
    // refused HTTP request never got that far.
    assert_eq!(backends.bookshelf.get("DeleteShelf"), 0);
}

// === acceptance 1: the JWT attack matrix, gRPC and HTTP ===

fn signed_in_rules() -> RuleSet {
    RuleSet::new([rule("signed-in", "*", "greeter", "*", Access::Grant, 0)]).unwrap()
}

/// Every forged or otherwise invalid token, by name.
fn attacks(keys: &Keys) -> Vec<(&'static str, String)> {
    let now = SystemTime::now();
    let valid = keys.token(&["admin"]);
    let header = part(&valid, 0);
    let claims = part(&valid, 1);
    let public = keys.key.public_jwk();
    let public_raw = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        public.x.as_deref().unwrap(),
    )
    .unwrap();
    let hs256 = hmac::Key::new(hmac::HMAC_SHA256, &public_raw);
    let other_key = SigningKey::generate(micro::auth::Algorithm::EdDSA, "k1").unwrap();
    let with_header = |extra: Value| {
        let mut header = header.clone();
        for (name, value) in extra.as_object().unwrap() {
            header[name] = value.clone();
        }
        craft(&header, &claims, ed25519(&keys.key))
    };
    let tampered = {
        let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
        let mut payload = claims.clone();
        payload["sub"] = json!("root");
        payload["scopes"] = json!(["admin", "root"]);
        parts[1] = b64(payload.to_string());
        parts.join(".")
    };
    let revoked = {
        let issued = keys
            .issuer
            .issue(&auth_support::account(&["admin"]))
            .unwrap();
        keys.revocations
            .revoke(issued.claims.jti.clone(), issued.claims.exp);
        issued.token
    };
    vec![
        (
            "alg none",
            craft(
                &json!({"alg": "none", "kid": "k1", "typ": "at+jwt"}),
                &claims,
                |_| Vec::new(),
            ),
        ),
        (
            "HS256 with the public key as secret",
            craft(
                &json!({"alg": "HS256", "kid": "k1", "typ": "at+jwt"}),
                &claims,
                |m| hmac::sign(&hs256, m).as_ref().to_vec(),
            ),
        ),
        (
            "wrong key under the right kid",
            token_from(&other_key, ISS, AUD, now),
        ),
        (
            "expired",
            token_from(&keys.key, ISS, AUD, now - Duration::from_secs(3600)),
        ),
        (
            "not yet valid",
            token_from(&keys.key, ISS, AUD, now + Duration::from_secs(3600)),
        ),
        (
            "wrong aud",
            token_from(&keys.key, ISS, "other-audience", now),
        ),
        (
            "wrong iss",
            token_from(&keys.key, "https://evil.test", AUD, now),
        ),
        ("tampered payload", tampered),
        (
            "jku elsewhere",
            with_header(json!({"jku": "https://evil.test/jwks.json"})),
        ),
        (
            "x5u elsewhere",
            with_header(json!({"x5u": "https://evil.test/cert.pem"})),
        ),
        ("revoked", revoked),
    ]
}

/// The gRPC code of `SayHello` straight to the backend, and the HTTP status through the
/// gateway (with its JSON code), for `token`.
async fn both_ways(channel: &tonic::transport::Channel, http: &Http, token: &str) -> (Code, Reply) {
    let mut client = greeter::greeter_client::GreeterClient::new(channel.clone());
    let code = match client
        .say_hello(with_token(support::hello("a"), Some(token)))
        .await
    {
        Ok(_) => Code::Ok,
        Err(status) => {
            assert!(!status.message().contains(token), "the token leaked");
            status.code()
        }
    };
    let reply = http_call(
        http,
        &(Method::POST, "/greeter/Greeter/SayHello", r#"{"name":"a"}"#),
        Some(token),
    )
    .await;
    (code, reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwt_attack_matrix_is_refused_by_grpc_and_http() {
    let keys = Keys::new();
    let registry = auth_support::memory_registry();
    let verifier = keys.verifier.clone();
    let layer = move |name: &str| AuthLayer::new(name, verifier.clone(), signed_in_rules());
    let backends = start_backends(&registry, Some(&layer)).await;
    let gateway_auth = AuthLayer::new("micro.api", keys.verifier.clone(), signed_in_rules());
    let http = Http::new(start_gateway(&registry, Some(gateway_auth)).await);
    let channel = grpc_channel(&backends.greeter_addr).await;

    let valid = keys.token(&[]);
    let (code, reply) = both_ways(&channel, &http, &valid).await;
    assert_eq!(
        (code, reply.status),
        (Code::Ok, StatusCode::OK),
        "{reply:?}"
    );
    assert_eq!(reply.json()["message"], "Hello, a!");

    let attacks = attacks(&keys);
    assert_eq!(attacks.len(), 11);
    let before = backends.greeter.get("SayHello");
    for (name, token) in &attacks {
        let (code, reply) = both_ways(&channel, &http, token).await;
        assert_eq!(code, Code::Unauthenticated, "gRPC, {name}");
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "HTTP, {name}: {reply:?}"
        );
        assert_refusal(&reply, Code::Unauthenticated, true, name);
        let message = reply.json()["message"].as_str().unwrap().to_owned();
        assert!(
            !message.contains(token.as_str()),
            "{name}: the token leaked"
        );
    }
    assert_eq!(
        backends.greeter.get("SayHello"),
        before,
        "no forged token reached the handler"
    );

    // Rotation: k2 joins the key set, the issuer switches to it; both verify during the
    // overlap, then k1 leaves and its tokens fail at once (also those already cached).
    let k2 = SigningKey::generate(micro::auth::Algorithm::EdDSA, "k2").unwrap();
    let mut both = KeySet::new();
    both.insert_signing(&keys.key).unwrap();
    both.insert_signing(&k2).unwrap();
    keys.verifier.set_keys(both);
    let old = keys.token(&[]);
    let new = token_from(&k2, ISS, AUD, SystemTime::now());
    for (name, token) in [("old key, overlap", &old), ("new key, overlap", &new)] {
        let (code, reply) = both_ways(&channel, &http, token).await;
        assert_eq!(
            (code, reply.status),
            (Code::Ok, StatusCode::OK),
            "{name}: {reply:?}"
        );
    }
    let mut only_new = KeySet::new();
    only_new.insert_signing(&k2).unwrap();
    keys.verifier.set_keys(only_new);
    let (code, reply) = both_ways(&channel, &http, &old).await;
    assert_eq!(code, Code::Unauthenticated, "old key after rotation");
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{reply:?}");
    let (code, reply) = both_ways(&channel, &http, &new).await;
    assert_eq!(
        (code, reply.status),
        (Code::Ok, StatusCode::OK),
        "{reply:?}"
    );
}

// === micro api --auth-jwks ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn micro_api_enforces_the_rules_of_its_files() {
    let keys = Keys::new();
    let registry = support::RegistryDir::new();
    let _greeter = support::start_test_greeter(registry.registry()).await;
    let files = tempfile::tempdir().unwrap();
    let jwks = files.path().join("jwks.json");
    let rules = files.path().join("rules.json");
    std::fs::write(
        &jwks,
        serde_json::to_string(&keys.verifier.keys().to_jwks()).unwrap(),
    )
    .unwrap();
    std::fs::write(
        &rules,
        serde_json::to_string(&[rule("signed-in", "*", "greeter", "*", Access::Grant, 0)]).unwrap(),
    )
    .unwrap();
    let (_api, addr) = start_micro_api(
        registry.url(),
        &[
            "--broker",
            "off",
            "--auth-jwks",
            jwks.to_str().unwrap(),
            "--auth-rules",
            rules.to_str().unwrap(),
            "--auth-issuer",
            ISS,
            "--auth-audience",
            AUD,
        ],
    )
    .await;
    let http = Http::to(&addr);
    let route = (
        Method::POST,
        "/greeter/Greeter/SayHello",
        r#"{"name":"cli"}"#,
    );
    let anonymous = http_call(&http, &route, None).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{anonymous:?}");
    assert_refusal(
        &anonymous,
        Code::Unauthenticated,
        false,
        "micro api, no token",
    );
    let token = keys.token(&[]);
    let signed_in = http_call(&http, &route, Some(&token)).await;
    assert_eq!(signed_in.status, StatusCode::OK, "{signed_in:?}");
    assert_eq!(signed_in.json()["message"], "Hello, cli!");
}
