//! The per-call cost of auth: `Verifier::verify` of an EdDSA and an ES256 access token with
//! three keys in the set, `RuleSet::verify` over 50 rules, and `AuthLayer::check` (the
//! server layer's whole decision per call: header, cached token, rules) for EdDSA and
//! ES256 tokens.
//!
//! `cargo bench -p micro-core --bench auth`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use std::sync::Arc;

use micro_core::auth::{
    Access, Account, Algorithm, AuthLayer, Issuer, KeySet, Resource, Rule, RuleSet, SigningKey,
    Verifier,
};

const ISS: &str = "https://auth.micro.test";
const AUD: &str = "micro";

fn account() -> Account {
    Account {
        id: "svc-greeter".to_owned(),
        scopes: vec!["greeter.read".to_owned(), "admin".to_owned()],
        metadata: [("team".to_owned(), "core".to_owned())].into(),
        ..Account::default()
    }
}

fn tokens(c: &mut Criterion) {
    let mut group = c.benchmark_group("token_verify");
    for alg in [Algorithm::EdDSA, Algorithm::ES256] {
        let mut keys = KeySet::new();
        let mut issuer = None;
        for i in 0..3 {
            let Ok(key) = SigningKey::generate(alg, format!("k{i}")) else {
                return;
            };
            if keys.insert_signing(&key).is_err() {
                return;
            }
            issuer = Some(Issuer::new(ISS, AUD, key));
        }
        let Some(Ok(token)) = issuer.map(|issuer| issuer.issue(&account())) else {
            return;
        };
        let verifier = Verifier::new(keys, ISS, AUD);
        if verifier.verify(&token.token).is_err() {
            return;
        }
        group.bench_function(alg.as_str(), |b| {
            b.iter(|| verifier.verify(black_box(&token.token)))
        });
    }
    group.finish();
}

fn rules(c: &mut Criterion) {
    let rules = (0..50).map(|i| Rule {
        id: format!("rule-{i:02}"),
        scope: format!("scope-{}", i % 7),
        resource: Resource::service(format!("svc-{i}"), "*"),
        access: if i % 5 == 0 {
            Access::Deny
        } else {
            Access::Grant
        },
        priority: i % 3,
    });
    let Ok(set) = RuleSet::new(rules.chain([Rule {
        id: "last".to_owned(),
        scope: "*".to_owned(),
        resource: Resource::service("greeter", "Greeter.*"),
        access: Access::Grant,
        priority: -1,
    }])) else {
        return;
    };
    let caller = account();
    let resource = Resource::service("greeter", "Greeter.Hello");
    c.bench_function("rules_verify_51", |b| {
        b.iter(|| set.verify(black_box(Some(&caller)), black_box(&resource)))
    });
}

fn layer(c: &mut Criterion) {
    let mut group = c.benchmark_group("auth_layer_check");
    for alg in [Algorithm::EdDSA, Algorithm::ES256] {
        let Ok(key) = SigningKey::generate(alg, "k1") else {
            return;
        };
        let mut keys = KeySet::new();
        if keys.insert_signing(&key).is_err() {
            return;
        }
        let Ok(token) = Issuer::new(ISS, AUD, key).issue(&account()) else {
            return;
        };
        let Ok(rules) = RuleSet::new([Rule {
            id: "readers".to_owned(),
            scope: "greeter.read".to_owned(),
            resource: Resource::service("greeter", "Greeter.*"),
            access: Access::Grant,
            priority: 0,
        }]) else {
            return;
        };
        let verifier = Arc::new(Verifier::new(keys, ISS, AUD));
        let mut headers = http::HeaderMap::new();
        let Ok(value) = format!("Bearer {}", token.token).parse() else {
            return;
        };
        headers.insert(http::header::AUTHORIZATION, value);
        let path = "/greeter.v1.Greeter/SayHello";
        let cached = AuthLayer::new("greeter", verifier.clone(), rules.clone());
        if cached.check(path, &headers).is_err() {
            return;
        }
        group.bench_function(format!("{}/cached", alg.as_str()), |b| {
            b.iter(|| cached.check(black_box(path), black_box(&headers)))
        });
        let uncached = AuthLayer::new("greeter", verifier, rules).cache_capacity(0);
        group.bench_function(format!("{}/uncached", alg.as_str()), |b| {
            b.iter(|| uncached.check(black_box(path), black_box(&headers)))
        });
    }
    group.finish();
}

criterion_group!(benches, tokens, rules, layer);
criterion_main!(benches);
