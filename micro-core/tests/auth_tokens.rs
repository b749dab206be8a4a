//! Access tokens: the RFC 8725 attack matrix against `Verifier`, each attack refused with
//! its specific error; valid tokens, ES256, key rotation and JWKS documents.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use micro_core::auth::{
    Account, AccountKind, Algorithm, Audience, Claims, Issuer, Jwk, Jwks, KeyError, KeySet,
    MemoryRevocations, SigningKey, TokenError, Verifier,
};
use ring::{
    hmac,
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair},
};
use serde_json::{Value, json};

const ISS: &str = "https://auth.micro.test";
const AUD: &str = "micro";

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn account() -> Account {
    Account {
        id: "svc-greeter".to_owned(),
        kind: AccountKind::Service,
        scopes: vec!["greeter.read".to_owned(), "admin".to_owned()],
        metadata: [("team".to_owned(), "core".to_owned())].into(),
        issuer: String::new(),
    }
}

struct Fixture {
    key: Arc<SigningKey>,
    issuer: Issuer,
    verifier: Verifier,
}

fn fixture(alg: Algorithm) -> Fixture {
    let key = SigningKey::generate(alg, "k1").unwrap();
    let mut keys = KeySet::new();
    keys.insert_signing(&key).unwrap();
    let copy = SigningKey::from_pkcs8(alg, "k1", key.to_pkcs8()).unwrap();
    Fixture {
        key: Arc::new(copy),
        issuer: Issuer::new(ISS, AUD, key),
        verifier: Verifier::new(keys, ISS, AUD),
    }
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn parts(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

/// The decoded payload of a token.
fn payload(token: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts(token)[1]).unwrap()).unwrap()
}

/// A token with any header and payload, signed by `sign` over `header.payload`.
fn craft(header: &Value, payload: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let signed = format!("{}.{}", b64(header.to_string()), b64(payload.to_string()));
    let signature = sign(signed.as_bytes());
    format!("{signed}.{}", b64(signature))
}

/// Signs like `key` (its private half, loaded again from PKCS#8 with ring).
fn signer(key: &SigningKey) -> impl Fn(&[u8]) -> Vec<u8> + '_ {
    move |message| match key.algorithm() {
        Algorithm::EdDSA => Ed25519KeyPair::from_pkcs8(key.to_pkcs8())
            .unwrap()
            .sign(message)
            .as_ref()
            .to_vec(),
        Algorithm::ES256 => {
            let rng = SystemRandom::new();
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, key.to_pkcs8(), &rng)
                .unwrap()
                .sign(&rng, message)
                .unwrap()
                .as_ref()
                .to_vec()
        }
    }
}

fn valid_claims(f: &Fixture) -> Value {
    payload(&f.issuer.issue_at(&account(), now()).unwrap().token)
}

#[test]
fn a_valid_token_is_accepted() {
    for alg in [Algorithm::EdDSA, Algorithm::ES256] {
        let f = fixture(alg);
        let issued = f.issuer.issue_at(&account(), now()).unwrap();
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts(&issued.token)[0]).unwrap())
                .unwrap();
        assert_eq!(
            header,
            json!({"alg": alg.as_str(), "typ": "at+jwt", "kid": "k1"})
        );

        let claims = f.verifier.verify_at(&issued.token, now()).unwrap();
        assert_eq!(claims, issued.claims);
        assert_eq!(claims.iss, ISS);
        assert_eq!(claims.aud, Audience::One(AUD.to_owned()));
        assert_eq!(
            claims.exp,
            1_800_000_000 + 15 * 60,
            "default lifetime 15 min"
        );
        assert_eq!(claims.nbf, Some(1_800_000_000));
        assert_eq!(claims.iat, Some(1_800_000_000));
        assert_eq!(claims.jti.len(), 32);
        assert_eq!(
            claims.account(),
            Account {
                issuer: ISS.to_owned(),
                ..account()
            }
        );

        // And with the real clock.
        let fresh = f.issuer.issue(&account()).unwrap();
        assert_eq!(f.verifier.verify(&fresh.token).unwrap().id, "svc-greeter");
    }
}

#[test]
fn alg_none_is_refused() {
    let f = fixture(Algorithm::EdDSA);
    let claims = valid_claims(&f);
    for alg in ["none", "None", "NONE", ""] {
        let token = craft(
            &json!({"alg": alg, "kid": "k1", "typ": "at+jwt"}),
            &claims,
            |_| Vec::new(),
        );
        assert_eq!(
            f.verifier.verify_at(&token, now()),
            Err(TokenError::Algorithm(alg.to_owned()))
        );
    }
    let no_alg = craft(&json!({"kid": "k1", "typ": "at+jwt"}), &claims, |_| {
        Vec::new()
    });
    assert_eq!(
        f.verifier.verify_at(&no_alg, now()),
        Err(TokenError::Algorithm(String::new()))
    );
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    let f = fixture(Algorithm::EdDSA);
    let claims = valid_claims(&f);
    let jwk = f.key.public_jwk();
    let raw = URL_SAFE_NO_PAD.decode(jwk.x.as_deref().unwrap()).unwrap();
    let jwks_json = serde_json::to_vec(&Jwks { keys: vec![jwk] }).unwrap();
    // Every form of "the public key" an attacker might use as the HMAC secret.
    for secret in [raw, jwks_json] {
        for alg in ["HS256", "HS384", "HS512"] {
            let key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
            let token = craft(
                &json!({"alg": alg, "kid": "k1", "typ": "at+jwt"}),
                &claims,
                |m| hmac::sign(&key, m).as_ref().to_vec(),
            );
            assert_eq!(
                f.verifier.verify_at(&token, now()),
                Err(TokenError::Algorithm(alg.to_owned()))
            );
        }
    }
    let rs = craft(
        &json!({"alg": "RS256", "kid": "k1", "typ": "at+jwt"}),
        &claims,
        |_| vec![0; 256],
    );
    assert_eq!(
        f.verifier.verify_at(&rs, now()),
        Err(TokenError::Algorithm("RS256".to_owned()))
    );
}

#[test]
fn an_algorithm_that_does_not_fit_the_key_is_refused() {
    // The set holds an Ed25519 key `k1`; a valid ES256 token names `k1`.
    let f = fixture(Algorithm::EdDSA);
    let es = SigningKey::generate(Algorithm::ES256, "k1").unwrap();
    let token = Issuer::new(ISS, AUD, es)
        .issue_at(&account(), now())
        .unwrap()
        .token;
    assert_eq!(
        f.verifier.verify_at(&token, now()),
        Err(TokenError::Algorithm("ES256".to_owned()))
    );
    // And an algorithm left off the allow-list is refused even with the right key.
    let ed_only = Verifier::new(f.verifier.keys().as_ref().clone(), ISS, AUD)
        .with_algorithms(&[Algorithm::ES256]);
    let ed = f.issuer.issue_at(&account(), now()).unwrap().token;
    assert_eq!(
        ed_only.verify_at(&ed, now()),
        Err(TokenError::Algorithm("EdDSA".to_owned()))
    );
}

#[test]
fn a_different_key_with_the_same_kid_is_refused() {
    for alg in [Algorithm::EdDSA, Algorithm::ES256] {
        let f = fixture(alg);
        let impostor = SigningKey::generate(alg, "k1").unwrap();
        let token = Issuer::new(ISS, AUD, impostor)
            .issue_at(&account(), now())
            .unwrap()
            .token;
        assert_eq!(
            f.verifier.verify_at(&token, now()),
            Err(TokenError::BadSignature)
        );
    }
}

#[test]
fn expiry_with_leeway() {
    let f = fixture(Algorithm::EdDSA);
    let at = |secs_ago: u64| {
        f.issuer
            .issue_at(&account(), now() - Duration::from_secs(secs_ago))
            .unwrap()
            .token
    };
    let lifetime = 15 * 60;
    // An hour old: long expired.
    assert_eq!(
        f.verifier.verify_at(&at(3600), now()),
        Err(TokenError::Expired)
    );
    // Expired 29 s ago: within the default 30 s leeway.
    assert!(f.verifier.verify_at(&at(lifetime + 29), now()).is_ok());
    // Expired 30 s ago: out.
    assert_eq!(
        f.verifier.verify_at(&at(lifetime + 30), now()),
        Err(TokenError::Expired)
    );
    // No leeway: expired the second `exp` is reached.
    let strict =
        Verifier::new(f.verifier.keys().as_ref().clone(), ISS, AUD).with_leeway(Duration::ZERO);
    assert_eq!(
        strict.verify_at(&at(lifetime), now()),
        Err(TokenError::Expired)
    );
    assert!(strict.verify_at(&at(lifetime - 1), now()).is_ok());
}

#[test]
fn not_yet_valid_with_leeway() {
    let f = fixture(Algorithm::EdDSA);
    let ahead = |secs: u64| {
        f.issuer
            .issue_at(&account(), now() + Duration::from_secs(secs))
            .unwrap()
            .token
    };
    assert_eq!(
        f.verifier.verify_at(&ahead(3600), now()),
        Err(TokenError::NotYetValid)
    );
    assert_eq!(
        f.verifier.verify_at(&ahead(31), now()),
        Err(TokenError::NotYetValid)
    );
    assert!(f.verifier.verify_at(&ahead(30), now()).is_ok());
}

#[test]
fn wrong_audience_is_refused() {
    let f = fixture(Algorithm::EdDSA);
    let token = Issuer::new(
        ISS,
        "billing",
        SigningKey::from_pkcs8(Algorithm::EdDSA, "k1", f.key.to_pkcs8()).unwrap(),
    )
    .issue_at(&account(), now())
    .unwrap()
    .token;
    assert_eq!(
        f.verifier.verify_at(&token, now()),
        Err(TokenError::Audience)
    );
    // An array naming the audience is accepted, one that does not is refused.
    let mut claims = valid_claims(&f);
    claims["aud"] = json!(["billing", AUD]);
    let token = craft(
        &json!({"alg": "EdDSA", "kid": "k1", "typ": "at+jwt"}),
        &claims,
        signer(&f.key),
    );
    assert!(f.verifier.verify_at(&token, now()).is_ok());
    claims["aud"] = json!(["billing"]);
    let token = craft(
        &json!({"alg": "EdDSA", "kid": "k1", "typ": "at+jwt"}),
        &claims,
        signer(&f.key),
    );
    assert_eq!(
        f.verifier.verify_at(&token, now()),
        Err(TokenError::Audience)
    );
}

#[test]
fn wrong_issuer_is_refused() {
    let f = fixture(Algorithm::EdDSA);
    let key = SigningKey::from_pkcs8(Algorithm::EdDSA, "k1", f.key.to_pkcs8()).unwrap();
    let token = Issuer::new("https://evil.test", AUD, key)
        .issue_at(&account(), now())
        .unwrap()
        .token;
    assert_eq!(f.verifier.verify_at(&token, now()), Err(TokenError::Issuer));
}

#[test]
fn a_tampered_payload_is_refused() {
    for alg in [Algorithm::EdDSA, Algorithm::ES256] {
        let f = fixture(alg);
        let token = f.issuer.issue_at(&account(), now()).unwrap().token;
        let p = parts(&token);
        let mut claims = payload(&token);
        claims["scopes"] = json!(["admin", "root"]);
        claims["sub"] = json!("someone-else");
        let tampered = format!("{}.{}.{}", p[0], b64(claims.to_string()), p[2]);
        assert_eq!(
            f.verifier.verify_at(&tampered, now()),
            Err(TokenError::BadSignature)
        );
        // A tampered header too.
        let header = b64(json!({"alg": alg.as_str(), "kid": "k1", "typ": "AT+JWT"}).to_string());
        let tampered = format!("{header}.{}.{}", p[1], p[2]);
        assert_eq!(
            f.verifier.verify_at(&tampered, now()),
            Err(TokenError::BadSignature)
        );
        // A flipped signature bit.
        let mut signature = URL_SAFE_NO_PAD.decode(&p[2]).unwrap();
        signature[5] ^= 1;
        let tampered = format!("{}.{}.{}", p[0], p[1], b64(signature));
        assert_eq!(
            f.verifier.verify_at(&tampered, now()),
            Err(TokenError::BadSignature)
        );
    }
}

#[test]
fn key_headers_pointing_elsewhere_are_refused() {
    let f = fixture(Algorithm::EdDSA);
    let claims = valid_claims(&f);
    // The attacker's own key, published at a URL of their choosing or embedded.
    let attacker = SigningKey::generate(Algorithm::EdDSA, "k1").unwrap();
    let attacker_jwk = serde_json::to_value(attacker.public_jwk()).unwrap();
    let cases = [
        ("jku", json!("https://evil.test/jwks.json")),
        ("x5u", json!("https://evil.test/cert.pem")),
        ("jwk", attacker_jwk),
        ("x5c", json!(["MIIBszCCAVmgAwIBAgIUY..."])),
        ("crit", json!(["exp"])),
    ];
    for (name, value) in cases {
        let mut header = json!({"alg": "EdDSA", "kid": "k1", "typ": "at+jwt"});
        header[name] = value;
        // Signed by the attacker's key and by the real key: both refused for the header.
        for key in [&attacker, &*f.key] {
            let token = craft(&header, &claims, signer(key));
            assert_eq!(
                f.verifier.verify_at(&token, now()),
                Err(TokenError::ForbiddenHeader(name)),
                "{name}"
            );
        }
    }
}

#[test]
fn other_token_types_are_refused() {
    let f = fixture(Algorithm::EdDSA);
    let claims = valid_claims(&f);
    for typ in [Some("JWT"), Some("refresh+jwt"), Some("id+jwt"), None] {
        let mut header = json!({"alg": "EdDSA", "kid": "k1"});
        if let Some(typ) = typ {
            header["typ"] = json!(typ);
        }
        let token = craft(&header, &claims, signer(&f.key));
        assert_eq!(
            f.verifier.verify_at(&token, now()),
            Err(TokenError::Type(typ.map(str::to_owned))),
            "{typ:?}"
        );
    }
    for typ in ["at+jwt", "AT+JWT", "application/at+jwt"] {
        let header = json!({"alg": "EdDSA", "kid": "k1", "typ": typ});
        let token = craft(&header, &claims, signer(&f.key));
        assert!(f.verifier.verify_at(&token, now()).is_ok(), "{typ}");
    }
}

#[test]
fn a_revoked_token_is_refused() {
    let f = fixture(Algorithm::EdDSA);
    let revocations = Arc::new(MemoryRevocations::new());
    let verifier = Verifier::new(f.verifier.keys().as_ref().clone(), ISS, AUD)
        .with_revocations(revocations.clone());
    let revoked = f.issuer.issue_at(&account(), now()).unwrap();
    let kept = f.issuer.issue_at(&account(), now()).unwrap();
    assert!(verifier.verify_at(&revoked.token, now()).is_ok());
    revocations.revoke(revoked.claims.jti.clone(), revoked.claims.exp);
    assert_eq!(
        verifier.verify_at(&revoked.token, now()),
        Err(TokenError::Revoked)
    );
    assert!(verifier.verify_at(&kept.token, now()).is_ok());
    // Purging keeps entries until their token expired beyond the leeway.
    revocations.purge(now(), Duration::from_secs(30));
    assert_eq!(revocations.len(), 1);
    revocations.purge(now() + Duration::from_secs(3600), Duration::from_secs(30));
    assert!(revocations.is_empty());
}

#[test]
fn an_account_wide_revocation_refuses_tokens_issued_before_it() {
    let f = fixture(Algorithm::EdDSA);
    let revocations = Arc::new(MemoryRevocations::new());
    let verifier = Verifier::new(f.verifier.keys().as_ref().clone(), ISS, AUD)
        .with_revocations(revocations.clone());
    let before = f.issuer.issue_at(&account(), now()).unwrap();
    let other = Account {
        id: "svc-other".to_owned(),
        ..account()
    };
    let other_token = f.issuer.issue_at(&other, now()).unwrap();
    let later = now() + Duration::from_secs(10);
    let after = f.issuer.issue_at(&account(), later).unwrap();
    // Every token of svc-greeter issued before now + 5 s.
    let cut = 1_800_000_005;
    revocations.revoke_account("svc-greeter", cut, cut + 900);
    assert_eq!(
        verifier.verify_at(&before.token, later),
        Err(TokenError::Revoked)
    );
    assert!(
        verifier.verify_at(&after.token, later).is_ok(),
        "issued after the cut"
    );
    assert!(
        verifier.verify_at(&other_token.token, later).is_ok(),
        "another account"
    );
    assert_eq!(revocations.len(), 1);
    // Replaced wholesale (as a verifier following the auth service does).
    revocations.replace([("jti-1".to_owned(), cut + 900)], []);
    assert!(verifier.verify_at(&before.token, later).is_ok());
    assert_eq!(revocations.len(), 1);
    revocations.purge(now() + Duration::from_secs(3600), Duration::from_secs(30));
    assert!(revocations.is_empty());
}

#[test]
fn key_rotation_overlaps_then_drops_the_old_key() {
    let old = SigningKey::generate(Algorithm::EdDSA, "2026-01").unwrap();
    let new = SigningKey::generate(Algorithm::EdDSA, "2026-02").unwrap();
    let mut keys = KeySet::new();
    keys.insert_signing(&old).unwrap();
    let verifier = Verifier::new(keys.clone(), ISS, AUD);
    let old_token = Issuer::new(ISS, AUD, old)
        .issue_at(&account(), now())
        .unwrap()
        .token;
    assert!(verifier.verify_at(&old_token, now()).is_ok());

    // Overlap: both keys published; the issuer moved to the new one.
    keys.insert_signing(&new).unwrap();
    verifier.set_keys(keys.clone());
    let new_token = Issuer::new(ISS, AUD, new)
        .issue_at(&account(), now())
        .unwrap()
        .token;
    assert!(verifier.verify_at(&old_token, now()).is_ok());
    assert!(verifier.verify_at(&new_token, now()).is_ok());

    // The old key removed: its tokens are refused, the new ones still pass.
    assert!(keys.remove("2026-01"));
    verifier.set_keys(keys);
    assert_eq!(
        verifier.verify_at(&old_token, now()),
        Err(TokenError::UnknownKey(Some("2026-01".to_owned())))
    );
    assert!(verifier.verify_at(&new_token, now()).is_ok());
}

#[test]
fn unknown_or_missing_kid_is_refused() {
    let f = fixture(Algorithm::EdDSA);
    let claims = valid_claims(&f);
    let token = craft(
        &json!({"alg": "EdDSA", "kid": "k9", "typ": "at+jwt"}),
        &claims,
        signer(&f.key),
    );
    assert_eq!(
        f.verifier.verify_at(&token, now()),
        Err(TokenError::UnknownKey(Some("k9".to_owned())))
    );
    let token = craft(
        &json!({"alg": "EdDSA", "typ": "at+jwt"}),
        &claims,
        signer(&f.key),
    );
    assert_eq!(
        f.verifier.verify_at(&token, now()),
        Err(TokenError::UnknownKey(None))
    );
}

#[test]
fn missing_claims_are_refused() {
    let f = fixture(Algorithm::EdDSA);
    for claim in ["iss", "aud", "exp", "sub", "jti"] {
        let mut claims = valid_claims(&f);
        claims.as_object_mut().unwrap().remove(claim);
        let token = craft(
            &json!({"alg": "EdDSA", "kid": "k1", "typ": "at+jwt"}),
            &claims,
            signer(&f.key),
        );
        assert_eq!(
            f.verifier.verify_at(&token, now()),
            Err(TokenError::MissingClaim(claim)),
            "{claim}"
        );
    }
    // A claim of the wrong type is malformed.
    let mut claims = valid_claims(&f);
    claims["exp"] = json!("tomorrow");
    let token = craft(
        &json!({"alg": "EdDSA", "kid": "k1", "typ": "at+jwt"}),
        &claims,
        signer(&f.key),
    );
    assert!(matches!(
        f.verifier.verify_at(&token, now()),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn malformed_tokens_are_refused() {
    let f = fixture(Algorithm::EdDSA);
    let token = f.issuer.issue_at(&account(), now()).unwrap().token;
    let p = parts(&token);
    let long = "a".repeat(9000);
    let padded = format!("{}=.{}.{}", p[0], p[1], p[2]);
    let extra = format!("{token}.x");
    let not_json = format!("{}.{}.{}", b64("not json"), p[1], p[2]);
    for bad in [
        "",
        "abc",
        "a.b",
        extra.as_str(),
        long.as_str(),
        padded.as_str(),
        not_json.as_str(),
        "!!!.???.***",
    ] {
        assert!(
            matches!(
                f.verifier.verify_at(bad, now()),
                Err(TokenError::Malformed(_))
            ),
            "{bad:.40}"
        );
    }
}

#[test]
fn jwks_documents() {
    let ed = SigningKey::generate(Algorithm::EdDSA, "ed").unwrap();
    let es = SigningKey::generate(Algorithm::ES256, "es").unwrap();
    let mut keys = KeySet::new();
    keys.insert_signing(&ed).unwrap();
    keys.insert_signing(&es).unwrap();
    let json = serde_json::to_value(keys.to_jwks()).unwrap();
    let docs = json["keys"].as_array().unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["kty"], "OKP");
    assert_eq!(docs[0]["crv"], "Ed25519");
    assert_eq!(docs[0]["alg"], "EdDSA");
    assert_eq!(docs[0]["use"], "sig");
    assert_eq!(docs[0]["kid"], "ed");
    assert_eq!(docs[0]["x"].as_str().unwrap().len(), 43);
    assert!(docs[0].get("y").is_none() && docs[0].get("d").is_none());
    assert_eq!(docs[1]["kty"], "EC");
    assert_eq!(docs[1]["crv"], "P-256");
    assert_eq!(docs[1]["alg"], "ES256");
    assert_eq!(docs[1]["y"].as_str().unwrap().len(), 43);

    // Round trip through JSON, then verify tokens of both keys.
    let parsed = KeySet::from_json(&json.to_string()).unwrap();
    assert_eq!(parsed.to_jwks(), keys.to_jwks());
    let verifier = Verifier::new(parsed, ISS, AUD);
    for key in [ed, es] {
        let token = Issuer::new(ISS, AUD, key)
            .issue_at(&account(), now())
            .unwrap()
            .token;
        assert!(verifier.verify_at(&token, now()).is_ok());
    }
}

#[test]
fn invalid_jwks_are_refused() {
    let good = SigningKey::generate(Algorithm::EdDSA, "k")
        .unwrap()
        .public_jwk();
    let bad = |edit: &dyn Fn(&mut Jwk)| {
        let mut jwk = good.clone();
        edit(&mut jwk);
        KeySet::new().insert(jwk)
    };
    assert!(bad(&|_| {}).is_ok());
    for (what, edit) in [
        (
            "private part",
            &(|j: &mut Jwk| j.d = Some("AAAA".into())) as &dyn Fn(&mut Jwk),
        ),
        ("no kid", &|j: &mut Jwk| j.kid = None),
        ("short x", &|j: &mut Jwk| j.x = Some("AAAA".into())),
        ("alg mismatch", &|j: &mut Jwk| j.alg = Some("ES256".into())),
        ("HS alg", &|j: &mut Jwk| j.alg = Some("HS256".into())),
        ("use enc", &|j: &mut Jwk| j.use_ = Some("enc".into())),
        ("kty oct", &|j: &mut Jwk| j.kty = "oct".into()),
        ("kty RSA", &|j: &mut Jwk| j.kty = "RSA".into()),
        ("padded x", &|j: &mut Jwk| {
            j.x = j.x.as_ref().map(|x| format!("{x}="));
        }),
    ] {
        assert!(
            matches!(bad(edit), Err(KeyError::Jwk { .. })),
            "{what}: {:?}",
            bad(edit)
        );
    }
    let mut keys = KeySet::new();
    keys.insert(good.clone()).unwrap();
    assert_eq!(
        keys.insert(good),
        Err(KeyError::DuplicateKid("k".to_owned()))
    );
    assert!(KeySet::from_json("{\"keys\": 3}").is_err());
    assert!("HS256".parse::<Algorithm>().is_err());
    assert!(SigningKey::from_pkcs8(Algorithm::ES256, "k", b"junk").is_err());
}

#[test]
fn shareable_across_threads() {
    fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<Verifier>();
    is_send_sync::<Issuer>();
    is_send_sync::<KeySet>();
    is_send_sync::<Claims>();
}
