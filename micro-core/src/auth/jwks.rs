//! Signing keys, their public JWKs (RFC 7517, RFC 8037) and the [`KeySet`] verifiers trust.

use std::{collections::HashMap, fmt, str::FromStr};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::{
    rand::SystemRandom,
    signature::{
        self as ring_sig, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair,
        Ed25519KeyPair, KeyPair as _,
    },
};
use serde::{Deserialize, Serialize};

/// A JWS signature algorithm micro signs and verifies with. Nothing else is ever accepted:
/// not `none`, not HMAC (`HS*`), not RSA (`RS*`, `PS*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// Ed25519 signatures (RFC 8037), JWK `kty` `OKP`, `crv` `Ed25519`. The default.
    EdDSA,
    /// ECDSA on P-256 with SHA-256 (RFC 7518 §3.4), JWK `kty` `EC`, `crv` `P-256`.
    ES256,
}

impl Algorithm {
    /// The JOSE name, as in a token's `alg` header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "EdDSA" => Ok(Self::EdDSA),
            "ES256" => Ok(Self::ES256),
            other => Err(KeyError::Algorithm(other.to_owned())),
        }
    }
}

/// A key that cannot be created, loaded or used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// An algorithm micro does not use for tokens.
    #[error("algorithm {0:?} is not supported; use EdDSA or ES256")]
    Algorithm(String),
    /// A JWK that is not a valid public Ed25519 or P-256 signing key.
    #[error("invalid JWK {kid:?}: {reason}")]
    Jwk {
        /// The key's `kid`, if it has one.
        kid: Option<String>,
        /// What is wrong.
        reason: &'static str,
    },
    /// Two keys with the same `kid` in one set.
    #[error("kid {0:?} is used by two keys; every key in a key set needs its own kid")]
    DuplicateKid(String),
    /// Private key material that does not load.
    #[error("invalid {alg} private key: {reason}")]
    Private {
        /// The algorithm the key was loaded for.
        alg: Algorithm,
        /// What is wrong.
        reason: &'static str,
    },
    /// The system's random source or the signer failed.
    #[error("cryptographic failure: {0}")]
    Crypto(&'static str),
}

/// A public JSON Web Key (RFC 7517): `kty` `OKP` with `crv` `Ed25519` and `x` (RFC 8037), or
/// `kty` `EC` with `crv` `P-256`, `x` and `y` (RFC 7518 §6.2), base64url without padding.
///
/// Other members (`key_ops`, `x5c`, …) are ignored when read. A JWK carrying a private part
/// (`d`) is refused by [`KeySet`]: a published key set holds public keys only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type: `OKP` or `EC`.
    pub kty: String,
    /// Curve: `Ed25519` or `P-256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// The public key (Ed25519), or the point's x coordinate (P-256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// The point's y coordinate (P-256 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// The private part; never published, refused by [`KeySet`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d: Option<String>,
    /// The key id tokens name in their `kid` header; required by micro.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// The algorithm, `EdDSA` or `ES256`; when absent it follows from `kty`/`crv`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Intended use; when present it must be `sig`.
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

/// A JWK Set document (RFC 7517 §5): `{"keys": [...]}`, as an auth service publishes it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

enum Signer {
    Ed25519(Ed25519KeyPair),
    Es256(EcdsaKeyPair),
}

/// A private signing key with its `kid`. Generate one with [`SigningKey::generate`], keep
/// its [`SigningKey::to_pkcs8`] form secret, and publish [`SigningKey::public_jwk`].
///
/// `Debug` shows the kid and algorithm, never the key.
pub struct SigningKey {
    kid: String,
    alg: Algorithm,
    signer: Signer,
    pkcs8: Vec<u8>,
    rng: SystemRandom,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a new key for `alg` from the system's secure random source.
    pub fn generate(alg: Algorithm, kid: impl Into<String>) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let pkcs8 = match alg {
            Algorithm::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng),
            Algorithm::ES256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            }
        }
        .map_err(|_| KeyError::Crypto("key generation failed"))?;
        Self::from_pkcs8(alg, kid, pkcs8.as_ref())
    }

    /// Loads a key from its PKCS#8 DER form (as [`SigningKey::to_pkcs8`] returns it).
    pub fn from_pkcs8(
        alg: Algorithm,
        kid: impl Into<String>,
        pkcs8: &[u8],
    ) -> Result<Self, KeyError> {
        let kid = kid.into();
        if kid.is_empty() {
            return Err(KeyError::Jwk {
                kid: None,
                reason: "the kid is empty",
            });
        }
        let rng = SystemRandom::new();
        let bad = |_| KeyError::Private {
            alg,
            reason: "not a PKCS#8 key of this algorithm",
        };
        let signer = match alg {
            Algorithm::EdDSA => {
                Signer::Ed25519(Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8).map_err(bad)?)
            }
            Algorithm::ES256 => Signer::Es256(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
                    .map_err(bad)?,
            ),
        };
        Ok(Self {
            kid,
            alg,
            signer,
            pkcs8: pkcs8.to_vec(),
            rng,
        })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The private key in PKCS#8 DER: secret, store it encrypted or not at all.
    pub fn to_pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key as a JWK with `kid`, `alg` and `use` `sig`.
    pub fn public_jwk(&self) -> Jwk {
        let mut jwk = Jwk {
            kid: Some(self.kid.clone()),
            alg: Some(self.alg.as_str().to_owned()),
            use_: Some("sig".to_owned()),
            ..Jwk::default()
        };
        match &self.signer {
            Signer::Ed25519(pair) => {
                jwk.kty = "OKP".to_owned();
                jwk.crv = Some("Ed25519".to_owned());
                jwk.x = Some(URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()));
            }
            Signer::Es256(pair) => {
                // SEC1 uncompressed: 0x04 || x || y.
                let point = pair.public_key().as_ref();
                let (x, y) = point
                    .get(1..)
                    .and_then(|xy| xy.split_at_checked(32))
                    .unwrap_or_default();
                jwk.kty = "EC".to_owned();
                jwk.crv = Some("P-256".to_owned());
                jwk.x = Some(URL_SAFE_NO_PAD.encode(x));
                jwk.y = Some(URL_SAFE_NO_PAD.encode(y));
            }
        }
        jwk
    }

    /// Signs `message`: a raw Ed25519 signature, or ECDSA `r || s` (64 bytes) as JWS wants.
    pub(crate) fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.signer {
            Signer::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
            Signer::Es256(pair) => pair
                .sign(&self.rng, message)
                .map(|sig| sig.as_ref().to_vec())
                .map_err(|_| KeyError::Crypto("ECDSA signing failed")),
        }
    }
}

/// A public key parsed once, ready to check signatures.
#[derive(Clone)]
pub(crate) enum VerifyingKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    Es256(ring_sig::UnparsedPublicKey<[u8; 65]>),
}

impl VerifyingKey {
    pub(crate) fn algorithm(&self) -> Algorithm {
        match self {
            Self::Ed25519(_) => Algorithm::EdDSA,
            Self::Es256(_) => Algorithm::ES256,
        }
    }

    /// Checks `signature` over `message`; `false` for any failure, including a signature of
    /// the wrong length.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match self {
            Self::Ed25519(key) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify_strict(message, &sig).is_ok()),
            Self::Es256(key) => key.verify(message, signature).is_ok(),
        }
    }

    fn from_jwk(jwk: &Jwk) -> Result<Self, KeyError> {
        let err = |reason| KeyError::Jwk {
            kid: jwk.kid.clone(),
            reason,
        };
        if jwk.d.is_some() {
            return Err(err("it holds a private key (d); publish public keys only"));
        }
        if jwk.use_.as_deref().is_some_and(|u| u != "sig") {
            return Err(err("its use is not sig"));
        }
        let coordinate = |value: &Option<String>, name| -> Result<[u8; 32], KeyError> {
            let value = value.as_deref().ok_or_else(|| err(name))?;
            let bytes = URL_SAFE_NO_PAD
                .decode(value)
                .map_err(|_| err("a coordinate is not base64url without padding"))?;
            <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| err("a coordinate is not 32 bytes"))
        };
        let key = match (jwk.kty.as_str(), jwk.crv.as_deref()) {
            ("OKP", Some("Ed25519")) => {
                let x = coordinate(&jwk.x, "x is missing")?;
                Self::Ed25519(
                    ed25519_dalek::VerifyingKey::from_bytes(&x)
                        .map_err(|_| err("x is not an Ed25519 public key"))?,
                )
            }
            ("EC", Some("P-256")) => {
                let x = coordinate(&jwk.x, "x is missing")?;
                let y = coordinate(&jwk.y, "y is missing")?;
                let mut point = [0u8; 65];
                point[0] = 4;
                point[1..33].copy_from_slice(&x);
                point[33..].copy_from_slice(&y);
                Self::Es256(ring_sig::UnparsedPublicKey::new(
                    &ECDSA_P256_SHA256_FIXED,
                    point,
                ))
            }
            _ => return Err(err("kty/crv must be OKP/Ed25519 or EC/P-256")),
        };
        if let Some(alg) = &jwk.alg
            && alg != key.algorithm().as_str()
        {
            return Err(err("its alg does not fit its kty and crv"));
        }
        Ok(key)
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.algorithm().as_str())
    }
}

/// The public keys a [`Verifier`](super::Verifier) trusts, by `kid`, each parsed once.
///
/// Build it from configuration or the auth service's JWKS, never from anything a token
/// says. Rotation: add the new key, let issuers switch to it, and remove the old key once
/// the last token it signed has expired (one token lifetime later); during the overlap
/// both verify.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: HashMap<String, (Jwk, VerifyingKey)>,
}

impl KeySet {
    /// An empty set (verifies nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses every key of a JWK Set; fails on the first invalid or duplicate key.
    pub fn from_jwks(jwks: &Jwks) -> Result<Self, KeyError> {
        let mut set = Self::new();
        for jwk in &jwks.keys {
            set.insert(jwk.clone())?;
        }
        Ok(set)
    }

    /// Parses a JWK Set from its JSON text.
    pub fn from_json(json: &str) -> Result<Self, KeyError> {
        let jwks: Jwks = serde_json::from_str(json).map_err(|_| KeyError::Jwk {
            kid: None,
            reason: "the JWK Set is not valid JSON of the form {\"keys\": [...]}",
        })?;
        Self::from_jwks(&jwks)
    }

    /// Adds a public key; it needs a non-empty `kid` not yet in the set.
    pub fn insert(&mut self, jwk: Jwk) -> Result<(), KeyError> {
        let kid = match jwk.kid.as_deref() {
            Some(kid) if !kid.is_empty() => kid.to_owned(),
            _ => {
                return Err(KeyError::Jwk {
                    kid: None,
                    reason: "the kid is missing",
                });
            }
        };
        if self.keys.contains_key(&kid) {
            return Err(KeyError::DuplicateKid(kid));
        }
        let key = VerifyingKey::from_jwk(&jwk)?;
        self.keys.insert(kid, (jwk, key));
        Ok(())
    }

    /// Adds the public half of a signing key.
    pub fn insert_signing(&mut self, key: &SigningKey) -> Result<(), KeyError> {
        self.insert(key.public_jwk())
    }

    /// Removes the key `kid`; `true` if it was there.
    pub fn remove(&mut self, kid: &str) -> bool {
        self.keys.remove(kid).is_some()
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys as a JWK Set document, sorted by kid.
    pub fn to_jwks(&self) -> Jwks {
        let mut keys: Vec<Jwk> = self.keys.values().map(|(jwk, _)| jwk.clone()).collect();
        keys.sort_by(|a, b| a.kid.cmp(&b.kid));
        Jwks { keys }
    }

    pub(crate) fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.get(kid).map(|(_, key)| key)
    }
}
