//! Enforcement at the gateway: each request that would call a service is decided by the
//! gateway's [`AuthLayer`] (the verifier, token cache and rules the services use) once its
//! route names the method, before its body is read and before anything reaches a backend.

use http::{HeaderMap, header::AUTHORIZATION};
use micro_core::auth::AuthLayer;
use tonic::{Code, metadata::MetadataMap};

use super::error::ApiError;

/// The registered name `POST /event/{topic}` is decided as.
pub(crate) const EVENT_SERVICE: &str = "micro.event";
/// The gRPC path `POST /event/{topic}` is decided as: the endpoint `Event.Publish`, the
/// method of the event service that publishes too.
pub(crate) const EVENT_PATH: &str = "/micro.event.v1.Event/Publish";
/// The registered name of the gateway's own endpoints (`GET /openapi.json`).
pub(crate) const GATEWAY_SERVICE: &str = super::state::GATEWAY_NAME;
/// The gRPC path `GET /openapi.json` is decided as when it is not public: the endpoint
/// `Gateway.OpenAPI`.
pub(crate) const OPENAPI_PATH: &str = "/micro.api.Gateway/OpenAPI";

/// `WWW-Authenticate` of a request without a token (RFC 6750 §3.1).
const CHALLENGE: &str = "Bearer realm=\"micro\"";
/// `WWW-Authenticate` of a request whose token was refused.
const CHALLENGE_INVALID: &str = "Bearer realm=\"micro\", error=\"invalid_token\"";
/// `WWW-Authenticate` of a request the rules forbid.
const CHALLENGE_SCOPE: &str = "Bearer realm=\"micro\", error=\"insufficient_scope\"";
/// `WWW-Authenticate` of a request with several `authorization` headers.
const CHALLENGE_REQUEST: &str = "Bearer realm=\"micro\", error=\"invalid_request\"";

/// Decides a call to the gRPC `path` of the service registered as `service`, with the
/// request's `headers`: `Ok` when there is no auth or the rules allow the call, else the
/// 401, 403 (or 400 for several `authorization` headers) to answer.
pub(crate) fn authorize(
    auth: Option<&AuthLayer>,
    service: &str,
    path: &str,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let Some(auth) = auth else { return Ok(()) };
    let mut sent = headers.get_all(AUTHORIZATION).iter();
    let token_sent = sent.next().is_some();
    if sent.next().is_some() {
        // Which one would a backend read? Refuse rather than guess.
        return Err(ApiError {
            challenge: Some(CHALLENGE_REQUEST),
            ..ApiError::invalid("send one authorization header, not several")
        });
    }
    let Err(status) = auth.check_as(service, path, headers) else {
        return Ok(());
    };
    let (challenge, hint) = match status.code() {
        Code::Unauthenticated if token_sent => (
            CHALLENGE_INVALID,
            "; get a new token with POST /oauth/token",
        ),
        Code::Unauthenticated => (CHALLENGE, "; get a token with POST /oauth/token"),
        // The message names the deny rule, or says that no rule grants the call.
        Code::PermissionDenied => (CHALLENGE_SCOPE, ""),
        _ => (CHALLENGE, ""),
    };
    Err(ApiError {
        challenge: Some(challenge),
        ..ApiError::new(status.code(), format!("{}{hint}", status.message()))
    })
}

/// With auth on, the `authorization` metadata a backend gets is exactly the header the
/// gateway decided with (when the allow-list passes it on): never one smuggled in as
/// `grpc-metadata-authorization`.
pub(crate) fn pin_authorization(metadata: &mut MetadataMap, headers: &HeaderMap, forwarded: bool) {
    metadata.remove(AUTHORIZATION.as_str());
    if !forwarded {
        return;
    }
    if let Some(value) = headers
        .get(AUTHORIZATION)
        .and_then(|value| tonic::metadata::AsciiMetadataValue::try_from(value.as_bytes()).ok())
    {
        metadata.insert(AUTHORIZATION.as_str(), value);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;

    use http::{HeaderValue, StatusCode};
    use micro_core::auth::{
        Access, Account, Issuer, KeySet, Resource, Rule, RuleSet, SigningKey, Verifier,
    };

    use super::*;

    fn layer() -> (AuthLayer, Issuer) {
        let key = SigningKey::generate(micro_core::auth::Algorithm::EdDSA, "k1").unwrap();
        let mut keys = KeySet::new();
        keys.insert_signing(&key).unwrap();
        let rule = |id: &str, scope: &str, endpoint: &str| Rule {
            id: id.into(),
            scope: scope.into(),
            resource: Resource::service("greeter", endpoint),
            access: Access::Grant,
            priority: 0,
        };
        let rules = RuleSet::new([
            rule("public", "", "Greeter.Public"),
            rule("read", "read", "Greeter.Read"),
        ])
        .unwrap();
        let verifier = Arc::new(Verifier::new(keys, "iss", "aud"));
        (
            AuthLayer::new("gateway", verifier, rules),
            Issuer::new("iss", "aud", key),
        )
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
        headers
    }

    #[test]
    fn refusals_carry_the_rfc_6750_challenge() {
        let (auth, issuer) = layer();
        let auth = Some(&auth);
        let none = HeaderMap::new();
        assert!(authorize(None, "greeter", "/g.Greeter/Read", &none).is_ok());
        assert!(authorize(auth, "greeter", "/g.Greeter/Public", &none).is_ok());

        let anonymous = authorize(auth, "greeter", "/g.Greeter/Read", &none).unwrap_err();
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
        assert_eq!(anonymous.challenge, Some(CHALLENGE));
        assert!(anonymous.message.contains("POST /oauth/token"));

        let garbage = authorize(auth, "greeter", "/g.Greeter/Read", &bearer("x.y.z"));
        let garbage = garbage.unwrap_err();
        assert_eq!(garbage.status, StatusCode::UNAUTHORIZED);
        assert_eq!(garbage.challenge, Some(CHALLENGE_INVALID));
        assert!(!garbage.message.contains("x.y.z"), "{}", garbage.message);

        let account = Account {
            id: "ada".into(),
            ..Account::default()
        };
        let token = issuer.issue(&account).unwrap().token;
        let forbidden = authorize(auth, "greeter", "/g.Greeter/Read", &bearer(&token));
        let forbidden = forbidden.unwrap_err();
        assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
        assert_eq!(forbidden.code, Code::PermissionDenied);
        assert_eq!(forbidden.challenge, Some(CHALLENGE_SCOPE));
        assert!(!forbidden.message.contains(&token));

        let reader = Account {
            scopes: vec!["read".into()],
            ..account
        };
        let token = issuer.issue(&reader).unwrap().token;
        assert!(authorize(auth, "greeter", "/g.Greeter/Read", &bearer(&token)).is_ok());
        // The rules are the named service's, not the layer's.
        let other = authorize(auth, "other", "/g.Greeter/Read", &bearer(&token));
        assert_eq!(other.unwrap_err().status, StatusCode::FORBIDDEN);

        let mut twice = bearer(&token);
        twice.append(AUTHORIZATION, HeaderValue::from_static("Bearer other"));
        let twice = authorize(auth, "greeter", "/g.Greeter/Read", &twice).unwrap_err();
        assert_eq!(twice.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn the_backend_gets_the_header_that_was_decided_on() {
        let headers = bearer("checked");
        let mut metadata = MetadataMap::new();
        metadata.insert("authorization", "Bearer smuggled".parse().unwrap());
        pin_authorization(&mut metadata, &headers, true);
        assert_eq!(
            metadata.get_all("authorization").iter().collect::<Vec<_>>(),
            ["Bearer checked"]
        );
        pin_authorization(&mut metadata, &headers, false);
        assert!(metadata.get("authorization").is_none());
        pin_authorization(&mut metadata, &HeaderMap::new(), true);
        assert!(metadata.get("authorization").is_none());
    }
}
