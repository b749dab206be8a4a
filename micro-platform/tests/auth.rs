//! The auth service end to end: `AuthClient` (or a raw tonic stub) → gRPC over loopback →
//! `AuthService` → a real store (the embedded file store, and Redis).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use micro_core::{
    Service,
    auth::{Access, AccountKind, KeySet, Resource, Rule, TokenError, Verifier},
    registry::MemoryRegistry,
    service::RunningService,
    store::{ListOptions, Namespace, SharedStore},
};
use micro_platform::{
    auth::{AuthClient, AuthOptions, AuthService, AuthSync, BruteForce, NewAccount, TokenGrant},
    proto::auth::v1::{self as pb, auth_client::AuthClient as Stub},
};
use micro_plugins::redis::RedisStore;
use micro_test_engines::RedisServer;
use tonic::Code;

struct Running {
    service: AuthService,
    running: RunningService,
}

async fn start(store: SharedStore, options: AuthOptions) -> Running {
    let service = AuthService::new(store, options).await.unwrap();
    let running = Service::builder("micro.auth")
        .address("127.0.0.1:0")
        .registry(Arc::new(MemoryRegistry::new()))
        .add_service(service.clone().into_server())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    Running { service, running }
}

impl Running {
    fn client(&self) -> AuthClient {
        AuthClient::connect(self.running.local_address()).unwrap()
    }

    async fn stop(self) {
        self.running.shutdown().await.unwrap();
    }
}

fn service_account(id: &str, scopes: &[&str]) -> NewAccount {
    NewAccount {
        id: id.into(),
        kind: AccountKind::Service,
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..NewAccount::default()
    }
}

fn credentials(id: &str, secret: &str) -> TokenGrant {
    TokenGrant::ClientCredentials {
        id: id.into(),
        secret: secret.into(),
    }
}

fn rule(id: &str, scope: &str, name: &str, endpoint: &str, access: Access, priority: i32) -> Rule {
    Rule {
        id: id.into(),
        scope: scope.into(),
        resource: Resource::service(name, endpoint),
        access,
        priority,
    }
}

fn bearer(token: &str) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    headers
}

/// Every raw value in the auth database, as text.
async fn raw_store(store: &SharedStore) -> Vec<String> {
    let mut values = Vec::new();
    for table in ["accounts", "refresh", "rules", "keys", "revocations"] {
        let namespace = Namespace::new("auth", table).unwrap();
        let page = store
            .list(
                &namespace,
                ListOptions {
                    limit: 1000,
                    ..ListOptions::default()
                },
            )
            .await
            .unwrap();
        for record in store.get_many(&namespace, &page.keys).await.unwrap() {
            let record = record.unwrap();
            values.push(format!(
                "{} {}",
                record.key,
                String::from_utf8_lossy(&record.value)
            ));
        }
    }
    values
}

/// The whole account and token life cycle against `store`.
async fn life_cycle(store: SharedStore) {
    let server = start(store.clone(), AuthOptions::new().password_grant(true)).await;
    let auth = server.client();
    let mut secrets = Vec::new();

    // Generate: a service account with a generated secret, a user with a given one.
    let (billing, secret) = auth
        .generate(NewAccount {
            metadata: BTreeMap::from([("team".into(), "payments".into())]),
            ..service_account("billing", &["read", "write"])
        })
        .await
        .unwrap();
    assert_eq!(billing.kind, AccountKind::Service);
    assert_eq!(secret.len(), 43, "32 bytes base64url");
    secrets.push(secret.clone());
    let password = "correct horse battery staple".to_owned();
    auth.generate(NewAccount {
        id: "ada@example.com".into(),
        kind: AccountKind::User,
        scopes: vec!["read".into()],
        secret: Some(password.clone()),
        ..NewAccount::default()
    })
    .await
    .unwrap();
    secrets.push(password.clone());
    let again = auth
        .generate(service_account("billing", &[]))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    let bad = auth
        .generate(service_account("bad id", &[]))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().contains("bad id"), "{}", bad.message());
    let short = auth
        .generate(NewAccount {
            secret: Some("short".into()),
            ..service_account("shorty", &[])
        })
        .await
        .unwrap_err();
    assert_eq!(short.code(), Code::InvalidArgument);
    let listed = auth.list_accounts().await.unwrap();
    let ids: Vec<_> = listed.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["ada@example.com", "billing"]);
    assert_eq!(listed[1].metadata["team"], "payments");

    // client_credentials: an access token, no refresh token; scopes narrow.
    let tokens = auth
        .token(credentials("billing", &secret), &[])
        .await
        .unwrap();
    assert_eq!(tokens.refresh_token, None);
    assert_eq!(tokens.scopes, ["read", "write"]);
    assert_eq!(tokens.expires_in, Duration::from_secs(15 * 60));
    let inspected = auth.inspect(&tokens.access_token).await.unwrap();
    assert_eq!(inspected.account.id, "billing");
    assert_eq!(inspected.account.kind, AccountKind::Service);
    assert_eq!(inspected.issuer, "micro");
    assert_eq!(inspected.account.metadata["team"], "payments");
    let narrow = auth
        .token(credentials("billing", &secret), &["read".into()])
        .await
        .unwrap();
    assert_eq!(narrow.scopes, ["read"]);
    let wider = auth
        .token(credentials("billing", &secret), &["admin".into()])
        .await
        .unwrap_err();
    assert_eq!(wider.code(), Code::InvalidArgument);
    assert!(wider.message().contains("admin"), "{}", wider.message());
    // A user account is not a client.
    let user_as_client = auth
        .token(credentials("ada@example.com", &password), &[])
        .await
        .unwrap_err();
    assert_eq!(user_as_client.code(), Code::Unauthenticated);

    // password grant (enabled here): a refresh token, single use.
    let user = auth
        .token(
            TokenGrant::Password {
                id: "ada@example.com".into(),
                secret: password.clone(),
            },
            &[],
        )
        .await
        .unwrap();
    let first_refresh = user.refresh_token.clone().unwrap();
    secrets.push(first_refresh.clone());
    let refreshed = auth
        .token(TokenGrant::RefreshToken(first_refresh.clone()), &[])
        .await
        .unwrap();
    let second_refresh = refreshed.refresh_token.clone().unwrap();
    secrets.push(second_refresh.clone());
    assert_ne!(first_refresh, second_refresh);
    assert_eq!(refreshed.scopes, ["read"]);
    let reused = auth
        .token(TokenGrant::RefreshToken(first_refresh.clone()), &[])
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::Unauthenticated);

    // Revoke: a refresh token, and an access token by its id.
    let spare = auth
        .token(TokenGrant::RefreshToken(second_refresh.clone()), &[])
        .await
        .unwrap();
    let third_refresh = spare.refresh_token.clone().unwrap();
    secrets.push(third_refresh.clone());
    auth.revoke(&third_refresh).await.unwrap();
    let gone = auth
        .token(TokenGrant::RefreshToken(third_refresh), &[])
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::Unauthenticated);
    let jti = auth.inspect(&narrow.access_token).await.unwrap().token_id;
    auth.revoke_id(&jti).await.unwrap();
    assert_eq!(
        auth.inspect(&narrow.access_token).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        auth.revoke("not.a-token.at-all").await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let second_refresh = {
        let again = auth
            .token(
                TokenGrant::Password {
                    id: "ada@example.com".into(),
                    secret: password.clone(),
                },
                &[],
            )
            .await
            .unwrap();
        let token = again.refresh_token.unwrap();
        secrets.push(token.clone());
        token
    };

    // Rotation: the old secret stops working at once.
    let rotated = auth.rotate_secret("billing", None).await.unwrap();
    secrets.push(rotated.clone());
    assert_ne!(rotated, secret);
    let old = auth
        .token(credentials("billing", &secret), &[])
        .await
        .unwrap_err();
    assert_eq!(old.code(), Code::Unauthenticated);
    auth.token(credentials("billing", &rotated), &[])
        .await
        .unwrap();
    assert_eq!(
        auth.rotate_secret("nobody", None).await.unwrap_err().code(),
        Code::NotFound
    );

    // The store holds neither secrets nor refresh tokens, only their hashes.
    let raw = raw_store(&store).await;
    assert!(
        raw.iter()
            .any(|v| v.contains("$argon2id$v=19$m=19456,t=2,p=1$"))
    );
    for value in &raw {
        for secret in &secrets {
            assert!(
                !value.contains(secret.as_str()),
                "a secret in the store: {value}"
            );
        }
    }

    // Deleting an account revokes its access tokens and deletes its refresh tokens.
    auth.delete_account("ada@example.com").await.unwrap();
    let revoked = auth.inspect(&refreshed.access_token).await.unwrap_err();
    assert_eq!(revoked.code(), Code::Unauthenticated);
    assert!(
        revoked.message().contains("revoked"),
        "{}",
        revoked.message()
    );
    let orphan = auth
        .token(TokenGrant::RefreshToken(second_refresh), &[])
        .await
        .unwrap_err();
    assert_eq!(orphan.code(), Code::Unauthenticated);
    assert_eq!(
        auth.delete_account("ada@example.com")
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );
    let revocations = auth.list_revocations().await.unwrap();
    assert_eq!(revocations.len(), 2, "{revocations:?}");
    assert!(revocations.iter().any(|r| matches!(
        r,
        micro_platform::auth::Revocation::Account { id, .. } if id == "ada@example.com"
    )));
    assert!(revocations.iter().any(|r| matches!(
        r,
        micro_platform::auth::Revocation::Token { id, .. } if *id == jti
    )));
    // billing's tokens are unaffected.
    auth.inspect(&tokens.access_token).await.unwrap();
    server.stop().await;

    // A restart on the same store keeps keys, accounts and revocations.
    let server = start(store.clone(), AuthOptions::new()).await;
    let auth = server.client();
    auth.inspect(&tokens.access_token).await.unwrap();
    assert_eq!(
        auth.inspect(&refreshed.access_token)
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    auth.token(credentials("billing", &rotated), &[])
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn life_cycle_on_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = micro_core::store::FileStore::open(dir.path().join("auth.redb")).unwrap();
    life_cycle(Arc::new(store)).await;
}

#[tokio::test]
async fn life_cycle_on_redis() {
    let redis = RedisServer::start().await;
    life_cycle(Arc::new(RedisStore::new(&redis.url()).unwrap())).await;
}

#[tokio::test]
async fn the_password_grant_is_off_by_default() {
    let server = start(
        Arc::new(micro_core::store::MemoryStore::new()),
        AuthOptions::new(),
    )
    .await;
    let auth = server.client();
    auth.generate(NewAccount {
        id: "ada".into(),
        secret: Some("correct horse battery staple".into()),
        ..NewAccount::default()
    })
    .await
    .unwrap();
    let refused = auth
        .token(
            TokenGrant::Password {
                id: "ada".into(),
                secret: "correct horse battery staple".into(),
            },
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let unknown = auth
        .token_raw(pb::TokenRequest {
            grant_type: "implicit".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::InvalidArgument);
    server.stop().await;
}

#[tokio::test]
async fn rules_are_validated_and_enforced_at_once_in_process() {
    let server = start(
        Arc::new(micro_core::store::MemoryStore::new()),
        AuthOptions::new(),
    )
    .await;
    let auth = server.client();
    let layer = server.service.layer("greeter");
    let path = "/greeter.v1.Greeter/Hello";
    assert_eq!(
        layer
            .check(path, &http::HeaderMap::new())
            .unwrap_err()
            .code(),
        Code::Unauthenticated,
        "no rule: refused"
    );

    auth.create_rule(&rule(
        "public",
        "",
        "greeter",
        "Greeter.Hello",
        Access::Grant,
        1,
    ))
    .await
    .unwrap();
    layer.check(path, &http::HeaderMap::new()).unwrap();
    auth.create_rule(&rule("admins", "admin", "*", "*", Access::Grant, 5))
        .await
        .unwrap();
    auth.create_rule(&rule(
        "no-reset",
        "*",
        "greeter",
        "Greeter.Reset",
        Access::Deny,
        5,
    ))
    .await
    .unwrap();
    let order: Vec<_> = auth
        .list_rules()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(
        order,
        ["no-reset", "admins", "public"],
        "priority, deny first"
    );

    for (bad, needle) in [
        (
            rule("wild", "", "gr*eter", "*", Access::Grant, 0),
            "gr*eter",
        ),
        (rule("scope", "a*", "x", "*", Access::Grant, 0), "a*"),
        (rule("", "", "x", "*", Access::Grant, 0), "id"),
    ] {
        let status = auth.create_rule(&bad).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}");
        assert!(status.message().contains(needle), "{}", status.message());
    }
    assert_eq!(
        auth.create_rule(&rule("public", "", "x", "*", Access::Grant, 0))
            .await
            .unwrap_err()
            .code(),
        Code::AlreadyExists
    );

    auth.delete_rule("public").await.unwrap();
    assert_eq!(
        layer
            .check(path, &http::HeaderMap::new())
            .unwrap_err()
            .code(),
        Code::Unauthenticated,
        "the deletion took effect at once"
    );
    assert_eq!(
        auth.delete_rule("public").await.unwrap_err().code(),
        Code::NotFound
    );
    server.stop().await;
}

/// Polls `sync` until `check` holds, for at most `polls` polls after the call.
async fn within_polls(sync: &mut AuthSync, polls: usize, mut check: impl FnMut() -> bool) {
    for _ in 0..polls {
        if check() {
            return;
        }
        let ok = tokio::time::timeout(Duration::from_secs(10), sync.next_poll())
            .await
            .expect("a poll within 10 s");
        assert!(ok, "the poll failed");
    }
    assert!(check(), "not reached within {polls} polls");
}

#[tokio::test]
async fn revocations_reach_a_synced_layer_within_two_polls() {
    let server = start(
        Arc::new(micro_core::store::MemoryStore::new()),
        AuthOptions::new(),
    )
    .await;
    let auth = server.client();
    auth.create_rule(&rule("accounts", "*", "*", "*", Access::Grant, 0))
        .await
        .unwrap();
    let (_, secret) = auth
        .generate(service_account("greeter", &[]))
        .await
        .unwrap();
    let (_, other_secret) = auth.generate(service_account("mailer", &[])).await.unwrap();
    let token = auth
        .token(credentials("greeter", &secret), &[])
        .await
        .unwrap()
        .access_token;
    let other = auth
        .token(credentials("mailer", &other_secret), &[])
        .await
        .unwrap()
        .access_token;

    let mut sync =
        AuthSync::start_with_interval(auth.clone(), "greeter", Duration::from_millis(50))
            .await
            .unwrap();
    let layer = sync.layer();
    let path = "/greeter.v1.Greeter/Hello";
    layer.check(path, &bearer(&token)).unwrap();
    layer.check(path, &bearer(&other)).unwrap();

    // A single token: the poll running during the revoke may miss it, the next one not.
    let started = Instant::now();
    auth.revoke(&token).await.unwrap();
    within_polls(&mut sync, 2, || layer.check(path, &bearer(&token)).is_err()).await;
    let elapsed = started.elapsed();
    eprintln!("revocation reached the synced layer after {elapsed:?} (interval 50 ms)");
    assert_eq!(
        layer.check(path, &bearer(&token)).unwrap_err().code(),
        Code::Unauthenticated
    );
    layer.check(path, &bearer(&other)).unwrap();

    // A whole account, by deleting it.
    auth.delete_account("mailer").await.unwrap();
    within_polls(&mut sync, 2, || layer.check(path, &bearer(&other)).is_err()).await;

    // Rules follow too.
    auth.delete_rule("accounts").await.unwrap();
    let (_, third) = auth.generate(service_account("third", &[])).await.unwrap();
    let third = auth
        .token(credentials("third", &third), &[])
        .await
        .unwrap()
        .access_token;
    within_polls(&mut sync, 2, || {
        layer
            .check(path, &bearer(&third))
            .is_err_and(|s| s.code() == Code::PermissionDenied)
    })
    .await;

    // The service down: a poll fails, and the layer keeps its last state.
    server.stop().await;
    let failed = async { while sync.next_poll().await {} };
    tokio::time::timeout(Duration::from_secs(10), failed)
        .await
        .expect("a failed poll within 10 s");
    layer.check(path, &bearer(&token)).unwrap_err();
    assert_eq!(
        layer.check(path, &bearer(&third)).unwrap_err().code(),
        Code::PermissionDenied
    );
}

#[tokio::test]
async fn a_rotated_key_verifies_until_pruned() {
    let offset = Arc::new(AtomicI64::new(0));
    let clock = {
        let offset = offset.clone();
        move || {
            let offset = offset.load(Ordering::SeqCst);
            SystemTime::now() + Duration::from_secs(u64::try_from(offset).unwrap())
        }
    };
    let server = start(
        Arc::new(micro_core::store::MemoryStore::new()),
        AuthOptions::new()
            .access_lifetime(Duration::from_secs(60))
            .clock(clock),
    )
    .await;
    let auth = server.client();
    let (_, secret) = auth.generate(service_account("svc", &[])).await.unwrap();
    let before = auth
        .token(credentials("svc", &secret), &[])
        .await
        .unwrap()
        .access_token;
    let old = auth.jwks().await.unwrap();

    let (current, published) = auth.rotate_keys().await.unwrap();
    assert_ne!(current, old.current_kid);
    assert_eq!(published.len(), 2);
    assert!(published.contains(&old.current_kid));
    let after = auth
        .token(credentials("svc", &secret), &[])
        .await
        .unwrap()
        .access_token;

    // During the overlap both verify, with the published keys.
    let overlap = auth.jwks().await.unwrap();
    assert_eq!(overlap.current_kid, current);
    let verifier = Verifier::new(KeySet::from_json(&overlap.jwks).unwrap(), "micro", "micro");
    verifier.verify(&before).unwrap();
    verifier.verify(&after).unwrap();
    auth.inspect(&before).await.unwrap();

    // Just before the old key's last token could expire: still published.
    offset.store(60 + 30 - 2, Ordering::SeqCst);
    assert_eq!(
        KeySet::from_json(&auth.jwks().await.unwrap().jwks)
            .unwrap()
            .len(),
        2
    );
    // Once lifetime + leeway passed since the rotation: pruned.
    offset.store(60 + 30 + 1, Ordering::SeqCst);
    let pruned = auth.jwks().await.unwrap();
    let keys = KeySet::from_json(&pruned.jwks).unwrap();
    assert_eq!(keys.len(), 1);
    let verifier = Verifier::new(keys, "micro", "micro");
    // Not expired in real time: refused for its key alone.
    assert!(matches!(
        verifier.verify(&before),
        Err(TokenError::UnknownKey(Some(kid))) if kid == old.current_kid
    ));
    verifier.verify(&after).unwrap();
    server.stop().await;
}

/// A raw stub whose connections come from `local` (a loopback address).
async fn stub_from(address: &str, local: &str) -> Stub<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .unwrap()
        .local_address(Some(local.parse().unwrap()))
        .connect()
        .await
        .unwrap();
    Stub::new(channel)
}

fn token_request(id: &str, secret: &str) -> pb::TokenRequest {
    pb::TokenRequest {
        grant_type: "client_credentials".into(),
        id: id.into(),
        secret: secret.into(),
        ..Default::default()
    }
}

/// Acceptance 4, counts: 1,000 wrong secrets for one id are refused as UNAUTHENTICATED
/// exactly up to the threshold, then RESOURCE_EXHAUSTED with `retry-after`, while another
/// client keeps getting tokens.
#[tokio::test]
async fn brute_force_locks_the_id_not_other_clients() {
    let limits = BruteForce::default();
    let server = start(
        Arc::new(micro_core::store::MemoryStore::new()),
        AuthOptions::new(),
    )
    .await;
    let auth = server.client();
    let (_, victim_secret) = auth.generate(service_account("victim", &[])).await.unwrap();
    let (_, secret) = auth.generate(service_account("honest", &[])).await.unwrap();
    let address = server.running.local_address().to_owned();
    let mut attacker = stub_from(&address, "127.0.0.1").await;
    let mut honest = stub_from(&address, "127.0.0.2").await;

    let (mut unauthenticated, mut exhausted, mut honest_tokens) = (0u32, 0u32, 0u32);
    let mut first_exhausted_at = None;
    for attempt in 0..1_000u32 {
        let status = attacker
            .token(token_request("victim", "wrong-secret-wrong-secret"))
            .await
            .unwrap_err();
        match status.code() {
            Code::Unauthenticated => {
                assert!(
                    first_exhausted_at.is_none(),
                    "UNAUTHENTICATED after the lock"
                );
                unauthenticated += 1;
            }
            Code::ResourceExhausted => {
                first_exhausted_at.get_or_insert(attempt);
                exhausted += 1;
                let retry: u64 = status
                    .metadata()
                    .get("retry-after")
                    .expect("retry-after")
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!((1..=60).contains(&retry), "retry-after {retry}");
            }
            other => panic!("unexpected {other:?}: {}", status.message()),
        }
        if attempt % 100 == 50 {
            let response = honest
                .token(token_request("honest", &secret))
                .await
                .unwrap();
            assert!(!response.into_inner().access_token.is_empty());
            honest_tokens += 1;
        }
    }
    assert_eq!(unauthenticated, limits.per_id);
    assert_eq!(exhausted, 1_000 - limits.per_id);
    assert_eq!(honest_tokens, 10);
    // The locked id stays locked even with its right secret, until the window ends.
    let locked = attacker
        .token(token_request("victim", &victim_secret))
        .await
        .unwrap_err();
    assert_eq!(locked.code(), Code::ResourceExhausted);
    server.stop().await;
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort_unstable();
    samples[samples.len() / 2]
}

/// Acceptance 4, timing: wrong secrets for an existing and a missing id cost the same.
#[tokio::test]
async fn missing_and_existing_ids_take_the_same_time() {
    let server = start(
        Arc::new(micro_core::store::MemoryStore::new()),
        AuthOptions::new().brute_force(BruteForce {
            per_id: u32::MAX,
            per_address: u32::MAX,
            ..BruteForce::default()
        }),
    )
    .await;
    let auth = server.client();
    auth.generate(service_account("exists", &[])).await.unwrap();
    let mut stub = stub_from(server.running.local_address(), "127.0.0.1").await;
    for _ in 0..4 {
        let _ = stub
            .token(token_request("exists", "warm-up-secret-xx"))
            .await;
        let _ = stub
            .token(token_request("missing", "warm-up-secret-xx"))
            .await;
    }

    const PAIRS: usize = 60;
    let (mut existing, mut missing) = (Vec::new(), Vec::new());
    for i in 0..PAIRS {
        // Interleaved, alternating which goes first, so drift hits both alike.
        let order = if i % 2 == 0 {
            ["exists", "missing"]
        } else {
            ["missing", "exists"]
        };
        for id in order {
            let started = Instant::now();
            let status = stub
                .token(token_request(id, "wrong-secret-wrong-secret"))
                .await
                .unwrap_err();
            let took = started.elapsed();
            assert_eq!(status.code(), Code::Unauthenticated);
            if id == "exists" {
                existing.push(took);
            } else {
                missing.push(took);
            }
        }
    }
    let mut sorted = existing.clone();
    sorted.sort_unstable();
    let iqr = sorted[PAIRS * 3 / 4] - sorted[PAIRS / 4];
    let (existing_median, missing_median) = (median(&mut existing), median(&mut missing));
    let difference = existing_median.abs_diff(missing_median);
    // The noise of this run: the spread of the existing-id samples (their interquartile
    // range), at least a tenth of their median.
    let noise = iqr.max(existing_median / 10);
    eprintln!(
        "existing {existing_median:?}, missing {missing_median:?}, difference {difference:?}, \
         IQR {iqr:?}, allowed {noise:?}"
    );
    assert!(
        difference <= noise,
        "existing {existing_median:?} vs missing {missing_median:?}: {difference:?} > {noise:?}"
    );
    server.stop().await;
}

fn forwarded(id: &str, from: &str) -> tonic::Request<pb::TokenRequest> {
    let mut request = tonic::Request::new(token_request(id, "wrong-secret-wrong-secret"));
    request.metadata_mut().insert(
        "x-forwarded-for",
        format!("198.51.100.1, {from}").parse().unwrap(),
    );
    request
}

/// Behind a trusted proxy (a loopback peer) the source is the last `x-forwarded-for`
/// entry; from an untrusted peer the header is ignored.
#[tokio::test]
async fn the_source_address_follows_trusted_proxies_only() {
    let limits = BruteForce {
        per_id: 100,
        per_address: 3,
        ..BruteForce::default()
    };
    let server = start(
        Arc::new(micro_core::store::MemoryStore::new()),
        AuthOptions::new().brute_force(limits),
    )
    .await;
    let mut stub = stub_from(server.running.local_address(), "127.0.0.1").await;
    for id in ["a", "b", "c"] {
        let status = stub.token(forwarded(id, "203.0.113.7")).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    // 203.0.113.7 is locked whatever the id; 203.0.113.8 and the proxy itself are not.
    let locked = stub.token(forwarded("d", "203.0.113.7")).await.unwrap_err();
    assert_eq!(locked.code(), Code::ResourceExhausted);
    let other = stub.token(forwarded("d", "203.0.113.8")).await.unwrap_err();
    assert_eq!(other.code(), Code::Unauthenticated);
    let direct = stub
        .token(token_request("d", "wrong-secret-wrong-secret"))
        .await
        .unwrap_err();
    assert_eq!(direct.code(), Code::Unauthenticated);
    server.stop().await;

    // No trusted proxy: the header is ignored, the peer (127.0.0.1) is the source.
    let server = start(
        Arc::new(micro_core::store::MemoryStore::new()),
        AuthOptions::new().brute_force(limits).trusted_proxies([]),
    )
    .await;
    let mut stub = stub_from(server.running.local_address(), "127.0.0.1").await;
    for (id, from) in [
        ("a", "203.0.113.1"),
        ("b", "203.0.113.2"),
        ("c", "203.0.113.3"),
    ] {
        let status = stub.token(forwarded(id, from)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let locked = stub.token(forwarded("d", "203.0.113.4")).await.unwrap_err();
    assert_eq!(locked.code(), Code::ResourceExhausted);
    server.stop().await;
}
