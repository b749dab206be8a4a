//! A token request's form (RFC 6749 §4.3, §4.4, §6), the client's HTTP Basic credentials
//! (§2.3.1), and the errors of §5.2.

use std::collections::HashMap;

use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use micro_platform::proto::auth::v1::TokenRequest;
use percent_encoding::percent_decode_str;
use tonic::{Code, Status};

/// The grant a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grant {
    /// A service's id and secret (§4.4).
    ClientCredentials,
    /// A refresh token (§6).
    RefreshToken,
    /// A user's name and password (§4.3); the auth service refuses it unless enabled.
    Password,
}

/// A parsed token request, ready for `Auth.Token`.
#[derive(Debug)]
pub(crate) struct TokenForm {
    pub(crate) request: TokenRequest,
    pub(crate) grant: Grant,
    /// Whether the client authenticated with HTTP Basic.
    pub(crate) basic: bool,
}

/// An error of RFC 6749 §5.2: `{"error", "error_description"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OAuthError {
    pub(crate) status: StatusCode,
    pub(crate) error: &'static str,
    pub(crate) description: String,
    /// `WWW-Authenticate: Basic` (a 401 to a client that used Basic).
    pub(crate) basic_challenge: bool,
    pub(crate) retry_after: Option<HeaderValue>,
    pub(crate) allow: Option<&'static str>,
}

// === impl TokenForm ===

impl TokenForm {
    /// The token request in `body` (a form), with the client's credentials from Basic
    /// `headers` or the form.
    pub(crate) fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Self, OAuthError> {
        let mut form = parse_form(body)?;
        let basic = basic(headers)?;
        let used_basic = basic.is_some();
        let (id, secret) = match basic {
            Some((id, secret)) => {
                if form.contains_key("client_secret") {
                    return Err(OAuthError::invalid_request(
                        "the client authenticated twice: use HTTP Basic or client_secret in \
                         the body, not both",
                    ));
                }
                if form.get("client_id").is_some_and(|body_id| *body_id != id) {
                    return Err(OAuthError::invalid_request(
                        "client_id in the body is not the client of the Basic credentials",
                    ));
                }
                (Some(id), Some(secret))
            }
            None => (form.remove("client_id"), form.remove("client_secret")),
        };
        let scopes = match form.get("scope") {
            Some(scope) => scopes(scope)?,
            None => Vec::new(),
        };
        let Some(grant_type) = form.get("grant_type") else {
            return Err(OAuthError::invalid_request("grant_type is missing"));
        };
        let mut request = TokenRequest {
            grant_type: grant_type.clone(),
            scopes,
            ..TokenRequest::default()
        };
        let grant = match grant_type.as_str() {
            "client_credentials" => {
                let (Some(id), Some(secret)) = (id, secret) else {
                    return Err(OAuthError {
                        basic_challenge: true,
                        ..OAuthError::new(
                            StatusCode::UNAUTHORIZED,
                            "invalid_client",
                            "client_credentials needs the client's id and secret: HTTP Basic, \
                             or client_id and client_secret in the body",
                        )
                    });
                };
                request.id = id;
                request.secret = secret;
                Grant::ClientCredentials
            }
            "password" => {
                let (Some(username), Some(password)) =
                    (form.remove("username"), form.remove("password"))
                else {
                    return Err(OAuthError::invalid_request(
                        "the password grant needs username and password",
                    ));
                };
                request.id = username;
                request.secret = password;
                Grant::Password
            }
            "refresh_token" => {
                let Some(token) = form.remove("refresh_token") else {
                    return Err(OAuthError::invalid_request(
                        "the refresh_token grant needs refresh_token",
                    ));
                };
                request.refresh_token = token;
                request.id = id.unwrap_or_default();
                request.secret = secret.unwrap_or_default();
                Grant::RefreshToken
            }
            other => {
                return Err(OAuthError::new(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    format!(
                        "grant_type {:?} is not supported; use client_credentials, \
                         refresh_token or password",
                        sanitize(other)
                    ),
                ));
            }
        };
        Ok(Self {
            request,
            grant,
            basic: used_basic,
        })
    }
}

/// The parameters of a form body. Empty values count as omitted (§3.1); a parameter given
/// twice is refused (§3.1).
fn parse_form(body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| OAuthError::invalid_request("the form is not UTF-8"))?;
    let mut form = HashMap::new();
    for pair in text.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = decode(name)?;
        let value = decode(value)?;
        if value.is_empty() {
            continue;
        }
        if form.contains_key(&name) {
            return Err(OAuthError::invalid_request(format!(
                "parameter {:?} is given more than once",
                sanitize(&name)
            )));
        }
        form.insert(name, value);
    }
    Ok(form)
}

/// A form-urlencoded value: `+` is a space, `%XX` a byte; UTF-8.
fn decode(text: &str) -> Result<String, OAuthError> {
    let spaced = text.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|_| OAuthError::invalid_request("a form field is not UTF-8 once decoded"))
}

/// The client's id and secret from `Authorization: Basic` (each form-urlencoded, §2.3.1);
/// `None` without an authorization header.
fn basic(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(OAuthError::invalid_request(
            "send one authorization header, not several",
        ));
    }
    let malformed = || OAuthError {
        basic_challenge: true,
        ..OAuthError::invalid_request(
            "the authorization header is not `Basic base64(client_id:client_secret)`",
        )
    };
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, credentials) = value.trim().split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(malformed());
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials.trim())
        .map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    let (id, secret) = (decode(id)?, decode(secret)?);
    if id.is_empty() {
        return Err(malformed());
    }
    Ok(Some((id, secret)))
}

/// The scopes of a `scope` parameter: space-separated `scope-token`s (§3.3).
fn scopes(scope: &str) -> Result<Vec<String>, OAuthError> {
    let allowed =
        |c: char| c == '\x21' || ('\x23'..='\x5b').contains(&c) || ('\x5d'..='\x7e').contains(&c);
    scope
        .split(' ')
        .filter(|token| !token.is_empty())
        .map(|token| {
            if token.chars().all(allowed) {
                Ok(token.to_owned())
            } else {
                Err(OAuthError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_scope",
                    "a scope may hold printable ASCII only, without `\"` and `\\`",
                ))
            }
        })
        .collect()
}

/// `text` with what an `error_description` may not hold (§5.2: printable ASCII without `"`
/// and `\`) replaced by `?`, at most 200 characters.
fn sanitize(text: &str) -> String {
    text.chars()
        .take(200)
        .map(|c| match c {
            ' ' | '!' | '#'..='[' | ']'..='~' => c,
            _ => '?',
        })
        .collect()
}

/// Adds `Cache-Control: no-store` and `Pragma: no-cache` (§5.1).
pub(crate) fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

// === impl OAuthError ===

impl OAuthError {
    pub(crate) fn new(
        status: StatusCode,
        error: &'static str,
        description: impl Into<String>,
    ) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            basic_challenge: false,
            retry_after: None,
            allow: None,
        }
    }

    pub(crate) fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    pub(crate) fn method_not_allowed(method: &Method) -> Self {
        Self {
            allow: Some("POST"),
            ..Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request",
                format!("the token endpoint takes POST, not {method}"),
            )
        }
    }

    /// The answer to a refusal of `Auth.Token` for `grant`; `basic` when the client used
    /// HTTP Basic.
    pub(crate) fn from_status(status: &Status, grant: Grant, basic: bool) -> Self {
        let message = sanitize(status.message());
        let about_scopes = message.to_ascii_lowercase().contains("scope");
        match status.code() {
            Code::InvalidArgument if about_scopes => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_scope", message)
            }
            Code::InvalidArgument | Code::OutOfRange => Self::invalid_request(message),
            Code::PermissionDenied if about_scopes => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_scope", message)
            }
            Code::PermissionDenied => {
                Self::new(StatusCode::BAD_REQUEST, "unauthorized_client", message)
            }
            Code::Unauthenticated if grant == Grant::RefreshToken => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_grant", message)
            }
            Code::Unauthenticated => Self {
                basic_challenge: basic,
                ..Self::new(StatusCode::UNAUTHORIZED, "invalid_client", message)
            },
            Code::FailedPrecondition => {
                Self::new(StatusCode::BAD_REQUEST, "unsupported_grant_type", message)
            }
            Code::ResourceExhausted => Self {
                retry_after: status
                    .metadata()
                    .get("retry-after")
                    .and_then(|value| value.to_str().ok())
                    .filter(|value| !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|value| HeaderValue::from_str(value).ok()),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, "slow_down", message)
            },
            Code::Unavailable | Code::DeadlineExceeded | Code::NotFound | Code::Unimplemented => {
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    format!("the auth service cannot issue tokens now: {message}"),
                )
            }
            _ => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                format!("the auth service failed: {message}"),
            ),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": self.error,
            "error_description": self.description,
        });
        let mut response = no_store((self.status, body.to_string()).into_response());
        let headers = response.headers_mut();
        if self.basic_challenge && self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"micro\", charset=\"UTF-8\""),
            );
        }
        if let Some(retry_after) = self.retry_after {
            headers.insert(header::RETRY_AFTER, retry_after);
        }
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        response
    }
}

#[cfg(test)]
mod tests;
