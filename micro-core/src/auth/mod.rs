//! Authentication and authorization: accounts, scopes, access rules, signed tokens and the
//! keys that check them.
//!
//! # The model
//!
//! - An [`Account`] is a caller: a user or a service, with an id, **scopes** (plain names
//!   such as `admin` or `greeter.read`), metadata, and the issuer that vouches for it.
//! - An **access token** carries an account from the auth service to every service. It is a
//!   short-lived JWT (RFC 7519) signed with EdDSA (Ed25519, the default) or ES256: an
//!   [`Issuer`] mints it with a [`SigningKey`], a [`Verifier`] checks it locally with the
//!   public keys in a [`KeySet`], without a call to the auth service per request.
//! - A [`Rule`] says who may call what: a scope (empty: everyone, anonymous callers too;
//!   `*`: any authenticated account; a name: accounts holding that scope), a [`Resource`]
//!   pattern (kind, name, endpoint, with `*` wildcards), grant or deny, and a priority. A
//!   [`RuleSet`] compiles rules once and decides each call.
//!
//! A server checks a call in two steps: [`Verifier::verify`] turns the bearer token into an
//! [`Account`] (a missing token is an anonymous caller, an invalid one is refused as
//! `UNAUTHENTICATED`), then [`RuleSet::verify`] decides whether that account may call the
//! endpoint ([`Denied::Unauthenticated`] → `UNAUTHENTICATED`, [`Denied::Forbidden`] →
//! `PERMISSION_DENIED`). Both are `Send + Sync`, take `&self` and are meant to be shared in
//! an `Arc` by every connection.
//!
//! # Rules
//!
//! Rules are evaluated in a fixed order: **priority, highest first**; among rules of equal
//! priority **deny before grant**; then by **id** (ascending byte order; ids are unique). A
//! rule *applies* to a call when its scope matches the caller and its resource pattern
//! matches the called resource. The first applicable rule decides: a grant allows the call,
//! a deny refuses it (evaluation stops). When no rule applies the call is refused: nothing is
//! public unless a rule makes it so. A refused anonymous caller gets
//! [`Denied::Unauthenticated`] (it may succeed after authenticating), an authenticated one
//! [`Denied::Forbidden`] naming the deny rule if one decided.
//!
//! Resource patterns: `*` matches any value; `prefix*` matches values starting with
//! `prefix` (`Greeter.*` matches `Greeter.Hello`, not `Greeter`); anything else matches
//! exactly. [`RuleSet::new`] refuses empty or duplicate ids and a `*` elsewhere in a pattern.
//!
//! ```
//! use micro_core::auth::{Access, Account, Denied, Resource, Rule, RuleSet};
//!
//! let rules = RuleSet::new([
//!     Rule {
//!         id: "public-hello".into(),
//!         scope: String::new(),
//!         resource: Resource::service("greeter", "Greeter.Hello"),
//!         access: Access::Grant,
//!         priority: 10,
//!     },
//!     Rule {
//!         id: "admins".into(),
//!         scope: "admin".into(),
//!         resource: Resource::service("*", "*"),
//!         access: Access::Grant,
//!         priority: 0,
//!     },
//! ])?;
//! let hello = Resource::service("greeter", "Greeter.Hello");
//! let reset = Resource::service("greeter", "Greeter.Reset");
//! assert_eq!(rules.verify(None, &hello), Ok(()));
//! assert_eq!(rules.verify(None, &reset), Err(Denied::Unauthenticated));
//! let admin = Account { id: "ada".into(), scopes: vec!["admin".into()], ..Account::default() };
//! assert_eq!(rules.verify(Some(&admin), &reset), Ok(()));
//! # Ok::<(), micro_core::auth::RuleError>(())
//! ```
//!
//! # Tokens
//!
//! Claims: `iss`, `sub` (the account id), `aud`, `exp`, `nbf`, `iat`, `jti` (a random id, for
//! revocation), `scopes`, `type` (`user` or `service`) and `metadata`. Lifetime: 15 min by
//! default ([`DEFAULT_LIFETIME`]). The header names the signing key's `kid` and the type
//! `at+jwt`.
//!
//! What [`Verifier`] checks, and why (RFC 8725, JWT best current practices):
//!
//! - **Keys only from configuration.** A token's `kid` selects a key of the configured
//!   [`KeySet`]; tokens with `jku`, `x5u`, `jwk` or `x5c` headers (which point at or embed
//!   keys of the token's own choosing) and `crit` are refused outright.
//! - **An allow-list of algorithms**: EdDSA and ES256. `none` is never accepted, nor
//!   HMAC (`HS*`) or RSA, and the `alg` must be the algorithm of the key `kid` names, so a
//!   public key can never be used as an HMAC secret or with another curve.
//! - **Explicit typing**: the `typ` header must be `at+jwt` (RFC 9068), so a refresh or
//!   ID token signed with the same key is not taken for an access token.
//! - **Signature before claims**: the payload is only read once the signature verified.
//! - **iss, aud, exp, nbf**: the issuer and audience must be the configured ones; `exp` is
//!   required; `exp` and `nbf` are compared with a leeway for clock skew, 30 s by default
//!   ([`DEFAULT_LEEWAY`]).
//! - **Revocation**: the `jti`, and the account (`sub`, by `iat`: an account-wide revocation
//!   refuses every token of the account issued before a time), are looked up in a
//!   [`Revocations`] (in memory, fed by the auth service).
//!
//! # Enforcement
//!
//! On a server, [`AuthLayer`] (`Service::builder(name).layer(auth)`, or tonic's
//! `Server::layer`) checks every call: the `authorization: Bearer <token>` header through
//! the [`Verifier`] (with a cache that skips the signature of tokens seen before but
//! rechecks their key set, expiry and revocation), then the [`RuleSet`] for the resource
//! `service:<name>:<Service>.<Method>` (the gRPC path `/greeter.v1.Greeter/SayHello` is the
//! endpoint `Greeter.SayHello`, see [`endpoint`]). No token or an invalid one answers
//! `UNAUTHENTICATED`, a rule's refusal `PERMISSION_DENIED`. Health is public by default,
//! reflection follows the rules. Handlers read the caller with [`account`].
//!
//! On a client, [`Credentials`] is a tower layer that adds the caller's bearer token from a
//! [`TokenSource`]: a [`StaticToken`] (e.g. [`Credentials::from_env`], `MICRO_AUTH_TOKEN`)
//! or an [`IssuerSource`] minting and refreshing tokens before they expire.
//!
//! # Keys and rotation
//!
//! A [`SigningKey`] is private and stays with the issuer; its [`Jwk`] is public and goes into
//! every verifier's [`KeySet`] (a JWK Set, RFC 7517, as [`Jwks`]). To rotate: add the new
//! public key to the key sets, switch the issuer to the new key, and remove the old public key
//! once the last token it signed has expired. Tokens signed by either key verify during the
//! overlap; afterwards old tokens fail with [`TokenError::UnknownKey`].

mod credentials;
mod jwks;
mod layer;
mod rules;
mod token;

pub use credentials::{
    Credentials, CredentialsError, DEFAULT_REFRESH_MARGIN, ENV_TOKEN, IssuerSource, StaticToken,
    TokenSource, WithCredentials,
};
pub use jwks::{Algorithm, Jwk, Jwks, KeyError, KeySet, SigningKey};
pub use layer::{
    Auth, AuthLayer, DEFAULT_CACHE_CAPACITY, HEALTH_PREFIX, REFLECTION_PREFIX, account, endpoint,
};
pub use rules::{
    Access, Account, AccountKind, Denied, KIND_SERVICE, Resource, Rule, RuleError, RuleSet,
    WILDCARD, verify,
};
pub use token::{
    AccessToken, Audience, Claims, DEFAULT_LEEWAY, DEFAULT_LIFETIME, Issuer, MAX_TOKEN_LEN,
    MemoryRevocations, Revocations, TOKEN_TYPE, TokenError, Verifier,
};
