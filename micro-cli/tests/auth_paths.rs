//! The gateway's unauthenticated paths are exactly the documented ones (issue 7,
//! acceptance 6): with one public method and everything else behind a scope, thousands of
//! fuzzed spellings of every route without a token never reach a protected method; and a
//! request is refused before its body is read. Over real sockets on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/auth.rs"]
mod auth_support;
mod support;

use std::{sync::Arc, time::Duration};

use auth_support::{Http, Keys, raw_request, rule, start_backends};
use http::{Method, StatusCode};
use micro::auth::{Access, AuthLayer, RuleSet};
use rand::{Rng, SeedableRng, rngs::StdRng};

// === acceptance 6: only the documented paths are open ===

/// `Bookshelf.GetShelf` is public; everything else needs the scope `member`.
fn one_public_rules() -> RuleSet {
    RuleSet::new([
        rule(
            "public",
            "",
            "bookshelf",
            "Bookshelf.GetShelf",
            Access::Grant,
            10,
        ),
        rule("members", "member", "*", "*", Access::Grant, 0),
    ])
    .unwrap()
}

/// Every route to a protected method (RPC and REST forms), and the public method's.
const PROTECTED: &[(&str, &str)] = &[
    ("POST", "/greeter/Greeter/SayHello"),
    ("POST", "/greeter/greeter.v1.Greeter/SayHello"),
    ("POST", "/greeter/SayHello"),
    ("POST", "/greeter/Greeter.SayHello"),
    ("POST", "/greeter/Greeter/StreamHellos"),
    ("POST", "/bookshelf/Bookshelf/CreateShelf"),
    ("POST", "/bookshelf/bookshelf.v1.Bookshelf/DeleteShelf"),
    ("POST", "/bookshelf/GetBook"),
    ("POST", "/bookshelf/Bookshelf/ListBooks"),
    ("POST", "/v1/shelves"),
    ("DELETE", "/v1/shelves/s1"),
    ("POST", "/v1/shelves/s1/books"),
    ("GET", "/v1/shelves/s1/books/b1"),
    ("GET", "/v1/books/b1"),
    ("PATCH", "/v1/shelves/s1/books/b1"),
    ("DELETE", "/v1/shelves/s1/books/b1"),
    ("GET", "/v1/shelves/s1/books"),
    ("POST", "/v1/shelves/s1/books/b1:lend"),
    ("GET", "/v1/shelves/s1/books:stream"),
    ("POST", "/event/orders.created"),
    ("GET", "/openapi.json"),
];
const PUBLIC: &[(&str, &str)] = &[
    ("POST", "/bookshelf/Bookshelf/GetShelf"),
    ("GET", "/v1/shelves/s1"),
];

/// One random spelling of `path` (always starting with `/`).
fn mutate(path: &str, rng: &mut StdRng) -> String {
    let mut path = path.to_owned();
    let rounds = rng.random_range(1..=3);
    for _ in 0..rounds {
        path = match rng.random_range(0..16) {
            // Case changes.
            0 => path
                .chars()
                .map(|c| {
                    if rng.random_bool(0.3) {
                        if c.is_ascii_lowercase() {
                            c.to_ascii_uppercase()
                        } else {
                            c.to_ascii_lowercase()
                        }
                    } else {
                        c
                    }
                })
                .collect(),
            // Encoded slashes.
            1 => replace_one(
                &path,
                "/",
                if rng.random_bool(0.5) { "%2F" } else { "%2f" },
                rng,
            ),
            // Dot segments.
            2 => replace_one(&path, "/", "/./", rng),
            3 => replace_one(&path, "/", "/x/../", rng),
            4 => replace_one(&path, "/", "/%2e%2e/", rng),
            5 => replace_one(&path, "/", "/%2E/", rng),
            // Double slashes.
            6 => replace_one(&path, "/", "//", rng),
            // Trailing characters.
            7 => format!("{path}/"),
            8 => format!("{path};x=1"),
            9 => format!("{path}%00"),
            10 => format!("{path}%20"),
            11 => format!("{path}?x=1"),
            12 => match rng.random_range(0..3) {
                0 => format!("{path}%23frag"),
                1 => format!("{path}#frag"),
                _ => format!("/{path}"),
            },
            13 => format!("{path}.json"),
            // Unicode case folds: ſ (long s) folds to s, K (Kelvin) to k, ı (dotless i).
            14 => {
                let fold = ["%C5%BF", "%E2%84%AA", "%C4%B1"][rng.random_range(0..3)];
                let target = ['s', 'k', 'i'][rng.random_range(0..3)];
                match path.find(target) {
                    Some(at) => format!("{}{fold}{}", &path[..at], &path[at + 1..]),
                    None => path,
                }
            }
            // A percent-encoded letter.
            _ => match path
                .char_indices()
                .filter(|(_, c)| c.is_ascii_alphabetic())
                .nth(rng.random_range(0..4))
            {
                Some((at, c)) => format!("{}%{:02X}{}", &path[..at], c as u32, &path[at + 1..]),
                None => path,
            },
        };
    }
    path
}

/// `path` with one occurrence of `from` (chosen at random) replaced by `to`.
fn replace_one(path: &str, from: &str, to: &str, rng: &mut StdRng) -> String {
    // The leading `/` stays: a request target in origin form starts with it.
    let at: Vec<usize> = path
        .match_indices(from)
        .map(|(i, _)| i)
        .filter(|&i| i > 0)
        .collect();
    if at.is_empty() {
        return path.to_owned();
    }
    let i = at[rng.random_range(0..at.len())];
    format!("{}{to}{}", &path[..i], &path[i + from.len()..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_spelling_of_a_path_reaches_a_protected_method_without_a_token() {
    let keys = Keys::new();
    let registry = auth_support::memory_registry();
    // The backends trust the gateway: only it protects them.
    let backends = start_backends(&registry, None).await;
    let gateway_auth = AuthLayer::new("micro.api", keys.verifier.clone(), one_public_rules());
    let gateway = micro::api::Gateway::builder()
        .registry(registry.clone())
        .auth(gateway_auth)
        .public_openapi(false)
        .broker(Arc::new(micro::broker::MemoryBroker::new()))
        .build()
        .unwrap();
    let addr = auth_support::serve(gateway).await;
    let http = Http::new(addr);

    // The canonical spellings first: public answers 200, protected 401.
    let member = keys.token(&["member"]);
    for (method, path) in PUBLIC {
        let reply = raw_request(addr, method, path, body_for(method)).await;
        assert_eq!(reply.status, StatusCode::OK, "{method} {path}: {reply:?}");
    }
    for (method, path) in PROTECTED {
        let reply = raw_request(addr, method, path, body_for(method)).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{method} {path}: {reply:?}"
        );
        assert_eq!(reply.json()["code"], "UNAUTHENTICATED");
    }
    // And a member gets through: the routes are real.
    let reply = http
        .request(
            Method::GET,
            "/v1/shelves/s1/books/b1",
            &[("authorization", &format!("Bearer {member}"))],
            "",
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(backends.bookshelf.get("GetBook"), 1);
    let protected_before = protected_calls(&backends);

    let seed: u64 = std::env::var("MICRO_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6a7e_3a57);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut public_answers = 0;
    let requests = 3000;
    for i in 0..requests {
        let (method, path) = if i % 5 == 0 {
            PUBLIC[rng.random_range(0..PUBLIC.len())]
        } else {
            PROTECTED[rng.random_range(0..PROTECTED.len())]
        };
        let method = if rng.random_bool(0.1) {
            ["GET", "POST", "PUT", "DELETE", "PATCH", "get"][rng.random_range(0..6)]
        } else {
            method
        };
        let spelled = mutate(path, &mut rng);
        let reply = raw_request(addr, method, &spelled, body_for(method)).await;
        *statuses.entry(reply.status.as_u16()).or_default() += 1;
        let context = format!("seed {seed:#x} #{i}: {method} {spelled}");
        if reply.status.is_success() {
            // Only the public method answers: a Shelf, never anything else.
            let body = reply.json();
            assert!(
                body.as_object().is_some_and(|o| o.get("code").is_none()),
                "{context}: {body}"
            );
            public_answers += 1;
        } else {
            assert_eq!(
                reply.header("content-type"),
                Some("application/json"),
                "{context}: {reply:?}"
            );
            let body = reply.json();
            assert!(
                body["code"].is_string() && body["message"].is_string(),
                "{context}: {body}"
            );
        }
        assert_eq!(
            protected_calls(&backends),
            protected_before,
            "{context}: reached a protected method"
        );
    }
    let public_calls = backends.bookshelf.get("GetShelf");
    println!(
        "fuzz: {requests} requests, seed {seed:#x}; statuses {statuses:?}; public answers \
         {public_answers}, public calls {public_calls}"
    );
    assert_eq!(public_answers + PUBLIC.len(), public_calls);
    assert!(
        public_answers > 0,
        "the fuzz never reached the public method"
    );
    // Many spellings still name a protected method (and are refused for it), whatever the
    // seed: the fuzz is not just a test of 404s.
    assert!(
        statuses.get(&401).copied().unwrap_or(0) > requests / 20,
        "{statuses:?}"
    );
}

/// A JSON body for methods that take one (a REST GET or DELETE takes none).
fn body_for(method: &str) -> &'static str {
    match method {
        "GET" | "DELETE" => "",
        _ => r#"{"name":"shelves/s1"}"#,
    }
}

/// Calls to every method but the public one.
fn protected_calls(backends: &auth_support::Backends) -> usize {
    let shelf: usize = backends
        .bookshelf
        .snapshot()
        .iter()
        .filter(|(name, _)| **name != "GetShelf")
        .map(|(_, n)| n)
        .sum();
    let greeter: usize = backends.greeter.snapshot().values().sum();
    shelf + greeter
}

/// The decision comes before the body: a client announcing a large body and sending none of
/// it gets its 401 at once (a gateway reading the body first would wait for it for an hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_refused_before_their_body_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let keys = Keys::new();
    let registry = auth_support::memory_registry();
    let backends = start_backends(&registry, None).await;
    let gateway = micro::api::Gateway::builder()
        .registry(registry.clone())
        .auth(AuthLayer::new(
            "micro.api",
            keys.verifier.clone(),
            one_public_rules(),
        ))
        .body_read_timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    let addr = auth_support::serve(gateway).await;
    // Loads the bookshelf's schemas, so its REST routes are known.
    let warm = raw_request(addr, "POST", PUBLIC[0].1, body_for("POST")).await;
    assert_eq!(warm.status, StatusCode::OK, "{warm:?}");
    for (method, path) in [
        ("POST", "/greeter/Greeter/SayHello"),
        ("POST", "/v1/shelves"),
        ("PATCH", "/v1/shelves/s1/books/b1"),
    ] {
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let head = format!(
                "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
                 content-length: 1000000\r\n\r\n{{\"name\":"
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut reply = vec![0; 4096];
            let n = stream.read(&mut reply).await.unwrap();
            String::from_utf8_lossy(&reply[..n]).into_owned()
        };
        let reply = tokio::time::timeout(auth_support::CALL_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| panic!("{method} {path}: no answer before the body"));
        assert!(
            reply.starts_with("HTTP/1.1 401 "),
            "{method} {path}: {reply}"
        );
        assert!(reply.contains("UNAUTHENTICATED"), "{reply}");
    }
    assert_eq!(protected_calls(&backends), 0);
}
