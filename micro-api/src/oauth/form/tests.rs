#![allow(clippy::unwrap_used, clippy::expect_used)]

use tonic::metadata::MetadataValue;

use super::*;

fn parse(authorization: Option<&str>, body: &str) -> Result<TokenForm, OAuthError> {
    let mut headers = HeaderMap::new();
    if let Some(value) = authorization {
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
    }
    TokenForm::parse(&headers, body.as_bytes())
}

fn basic_of(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

fn error_of(result: Result<TokenForm, OAuthError>) -> (u16, &'static str) {
    let error = result.unwrap_err();
    (error.status.as_u16(), error.error)
}

#[test]
fn client_credentials_in_the_body() {
    let form = parse(
        None,
        "grant_type=client_credentials&client_id=svc-a&client_secret=s%2Bx+y&scope=read+write%20admin",
    )
    .unwrap();
    assert_eq!(form.grant, Grant::ClientCredentials);
    assert!(!form.basic);
    assert_eq!(form.request.grant_type, "client_credentials");
    assert_eq!(form.request.id, "svc-a");
    assert_eq!(form.request.secret, "s+x y");
    assert_eq!(form.request.scopes, ["read", "write", "admin"]);
}

#[test]
fn client_credentials_by_http_basic() {
    // §2.3.1: id and secret are form-urlencoded before base64.
    let form = parse(
        Some(&basic_of("svc%3Aa", "p%40ss%3Aword+x")),
        "grant_type=client_credentials",
    )
    .unwrap();
    assert!(form.basic);
    assert_eq!(form.request.id, "svc:a");
    assert_eq!(form.request.secret, "p@ss:word x");
    // The same client_id in the body too is fine.
    let form = parse(
        Some(&basic_of("svc", "secret")),
        "grant_type=client_credentials&client_id=svc",
    )
    .unwrap();
    assert_eq!(form.request.id, "svc");
    // A lower-case scheme too (RFC 7235: case-insensitive).
    let lower = basic_of("svc", "secret").replacen("Basic", "basic", 1);
    assert!(parse(Some(&lower), "grant_type=client_credentials").is_ok());
}

#[test]
fn two_client_authentications_are_refused() {
    let both = parse(
        Some(&basic_of("svc", "secret")),
        "grant_type=client_credentials&client_secret=secret",
    );
    assert_eq!(error_of(both), (400, "invalid_request"));
    let other_id = parse(
        Some(&basic_of("svc", "secret")),
        "grant_type=client_credentials&client_id=other",
    );
    assert_eq!(error_of(other_id), (400, "invalid_request"));
}

#[test]
fn malformed_requests_are_invalid_request() {
    for (authorization, body) in [
        (None, "client_id=a&client_secret=b"),
        (None, "grant_type=client_credentials&grant_type=password"),
        (
            None,
            "grant_type=client_credentials&client_id=a&client_id=b",
        ),
        (None, "grant_type=password&username=ada"),
        (None, "grant_type=refresh_token"),
        (None, "grant_type=client_credentials&client_id=%FF"),
        (Some("Bearer abc"), "grant_type=client_credentials"),
        (Some("Basic !!notbase64"), "grant_type=client_credentials"),
    ] {
        assert_eq!(
            error_of(parse(authorization, body)),
            (400, "invalid_request"),
            "{authorization:?} {body}"
        );
    }
    // Basic credentials without the `:`.
    let plain = base64::engine::general_purpose::STANDARD.encode("nocolon");
    assert_eq!(
        error_of(parse(
            Some(&format!("Basic {plain}")),
            "grant_type=client_credentials"
        )),
        (400, "invalid_request")
    );
}

#[test]
fn grants_and_their_fields() {
    assert_eq!(
        error_of(parse(None, "grant_type=authorization_code&code=x")),
        (400, "unsupported_grant_type")
    );
    let missing_client = parse(None, "grant_type=client_credentials&client_id=a");
    let error = missing_client.unwrap_err();
    assert_eq!(
        (error.status.as_u16(), error.error),
        (401, "invalid_client")
    );
    assert!(error.basic_challenge);

    let password = parse(None, "grant_type=password&username=ada&password=pw&scope=").unwrap();
    assert_eq!(password.grant, Grant::Password);
    assert_eq!(
        (
            password.request.id.as_str(),
            password.request.secret.as_str()
        ),
        ("ada", "pw")
    );
    assert!(
        password.request.scopes.is_empty(),
        "an empty value is omitted"
    );

    let refresh = parse(
        None,
        "grant_type=refresh_token&refresh_token=r1&client_id=svc",
    )
    .unwrap();
    assert_eq!(refresh.grant, Grant::RefreshToken);
    assert_eq!(refresh.request.refresh_token, "r1");
    assert_eq!(refresh.request.id, "svc");

    assert_eq!(
        error_of(parse(
            None,
            "grant_type=client_credentials&client_id=a&client_secret=b&scope=a%22b"
        )),
        (400, "invalid_scope")
    );
}

#[test]
fn refusals_map_to_rfc_6749_errors() {
    use Grant::*;
    let cases = [
        (
            Status::invalid_argument("id: bad"),
            ClientCredentials,
            400,
            "invalid_request",
        ),
        (
            Status::invalid_argument("scope x is not held"),
            ClientCredentials,
            400,
            "invalid_scope",
        ),
        (
            Status::unauthenticated("wrong credentials"),
            ClientCredentials,
            401,
            "invalid_client",
        ),
        (
            Status::unauthenticated("wrong credentials"),
            Password,
            401,
            "invalid_client",
        ),
        (
            Status::unauthenticated("refresh token expired"),
            RefreshToken,
            400,
            "invalid_grant",
        ),
        (
            Status::failed_precondition("password grant off"),
            Password,
            400,
            "unsupported_grant_type",
        ),
        (
            Status::resource_exhausted("slow"),
            ClientCredentials,
            429,
            "slow_down",
        ),
        (
            Status::unavailable("store down"),
            ClientCredentials,
            503,
            "temporarily_unavailable",
        ),
        (
            Status::internal("bug"),
            ClientCredentials,
            500,
            "server_error",
        ),
    ];
    for (status, grant, http, error) in cases {
        let mapped = OAuthError::from_status(&status, grant, false);
        assert_eq!(
            (mapped.status.as_u16(), mapped.error),
            (http, error),
            "{status:?}"
        );
    }
    let basic = OAuthError::from_status(&Status::unauthenticated("no"), ClientCredentials, true);
    let response = basic.into_response();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Basic ")
    );
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(response.headers()[header::PRAGMA], "no-cache");

    let mut limited = Status::resource_exhausted("too many attempts");
    limited
        .metadata_mut()
        .insert("retry-after", MetadataValue::from_static("7"));
    let response = OAuthError::from_status(&limited, ClientCredentials, false).into_response();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    // Anything but seconds is not copied.
    let mut odd = Status::resource_exhausted("x");
    odd.metadata_mut()
        .insert("retry-after", MetadataValue::from_static("soon"));
    let mapped = OAuthError::from_status(&odd, ClientCredentials, false);
    assert!(mapped.retry_after.is_none());
}

#[test]
fn descriptions_hold_only_what_rfc_6749_allows() {
    let mapped = OAuthError::from_status(
        &Status::invalid_argument("bad \"id\" \\ é\n"),
        Grant::ClientCredentials,
        false,
    );
    assert_eq!(mapped.description, "bad ?id? ? ??");
}
