//! The OAuth2 entry point: `POST /oauth/token` (RFC 6749) and `GET /.well-known/jwks.json`,
//! both answered by the auth service `micro.auth` through the gateway's client.

mod form;

use std::time::Duration;

use axum::{
    body::Body,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::{HeaderValue, Method as HttpMethod, StatusCode, header, request::Parts};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use micro_platform::proto::auth::v1::{JwksRequest, TokenResponse};
use tokio::time::Instant;
use tonic::Code;

use self::form::{Grant, OAuthError, TokenForm};
use super::{
    error::ApiError,
    metadata,
    state::{AUTH_SERVICE, Inner, Peer},
};

/// The token endpoint.
pub(crate) const TOKEN_PATH: &str = "/oauth/token";
/// The JWK Set of the auth service.
pub(crate) const JWKS_PATH: &str = "/.well-known/jwks.json";
/// The largest token request body accepted (16 KiB): a form of a few short fields.
pub(crate) const MAX_FORM: usize = 16 * 1024;
/// How long a fetched JWK Set is served before it is fetched again.
const JWKS_TTL: Duration = Duration::from_secs(5);

/// `POST /oauth/token`.
pub(crate) async fn token(inner: &Inner, parts: &Parts, body: Body) -> Response {
    match exchange(inner, parts, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn exchange(inner: &Inner, parts: &Parts, body: Body) -> Result<Response, OAuthError> {
    if parts.method != HttpMethod::POST {
        return Err(OAuthError::method_not_allowed(&parts.method));
    }
    let form_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|media| {
            media
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !form_type {
        return Err(OAuthError::invalid_request(
            "the body must be application/x-www-form-urlencoded (RFC 6749 §4.4.2)",
        ));
    }
    let read = Limited::new(body, MAX_FORM).collect();
    let body = match tokio::time::timeout(inner.config.body_read_timeout, read).await {
        Err(_) => {
            return Err(OAuthError::new(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request",
                "the request body was not received in time",
            ));
        }
        Ok(Err(err)) if err.is::<LengthLimitError>() => {
            return Err(OAuthError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                format!("the request body is larger than {MAX_FORM} bytes"),
            ));
        }
        Ok(Err(err)) => {
            return Err(OAuthError::invalid_request(format!(
                "cannot read the request body: {err}"
            )));
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let form = TokenForm::parse(&parts.headers, &body)?;
    let grant = form.grant;
    let basic = form.basic;
    let mut request = tonic::Request::new(form.request);
    request.set_timeout(inner.oauth.timeout);
    // Only the gateway says where the client is: the TCP peer, never a header it sent.
    metadata::forwarded_for(request.metadata_mut(), parts.extensions.get::<Peer>());
    let mut client = inner.oauth.client.clone();
    match client.token(request).await {
        Ok(reply) => Ok(issued(reply.into_inner())),
        Err(status) => {
            tracing::debug!(grant = grant.as_str(), code = ?status.code(), "oauth: token refused");
            Err(OAuthError::from_status(&status, grant, basic))
        }
    }
}

/// The 200 of RFC 6749 §5.1.
fn issued(reply: TokenResponse) -> Response {
    let mut body = serde_json::json!({
        "access_token": reply.access_token,
        "token_type": if reply.token_type.is_empty() { "Bearer".to_owned() } else { reply.token_type },
        "expires_in": reply.expires_in,
    });
    if !reply.refresh_token.is_empty() {
        body["refresh_token"] = reply.refresh_token.into();
    }
    if !reply.scopes.is_empty() {
        body["scope"] = reply.scopes.join(" ").into();
    }
    form::no_store((StatusCode::OK, body.to_string()).into_response())
}

/// `GET /.well-known/jwks.json`: the auth service's JWK Set, fetched at most every few
/// seconds; the last one fetched while the service cannot be reached.
pub(crate) async fn jwks(inner: &Inner, parts: &Parts) -> Result<Response, ApiError> {
    if parts.method != HttpMethod::GET && parts.method != HttpMethod::HEAD {
        return Err(ApiError::method_not_allowed(
            "GET, HEAD",
            format!("{JWKS_PATH} takes GET"),
        ));
    }
    let mut cached = inner.oauth.jwks.lock().await;
    let fresh = cached
        .as_ref()
        .filter(|(at, _)| at.elapsed() < JWKS_TTL)
        .map(|(_, body)| body.clone());
    let body = match fresh {
        Some(body) => body,
        None => {
            let mut request = tonic::Request::new(JwksRequest {});
            request.set_timeout(inner.oauth.timeout);
            let mut client = inner.oauth.client.clone();
            match client.jwks(request).await {
                Ok(reply) => {
                    let body = Bytes::from(reply.into_inner().jwks);
                    *cached = Some((Instant::now(), body.clone()));
                    body
                }
                Err(status) => match cached.as_ref() {
                    Some((_, stale)) => {
                        tracing::warn!(error = %status.message(), "cannot refresh the JWK Set; serving the last one");
                        stale.clone()
                    }
                    None => {
                        let code = match status.code() {
                            Code::DeadlineExceeded => Code::DeadlineExceeded,
                            _ => Code::Unavailable,
                        };
                        return Err(ApiError::new(
                            code,
                            format!(
                                "the JWK Set is not available from {AUTH_SERVICE}: {}",
                                status.message()
                            ),
                        ));
                    }
                },
            }
        }
    };
    drop(cached);
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=5"),
    );
    Ok(response)
}

impl Grant {
    fn as_str(self) -> &'static str {
        match self {
            Self::ClientCredentials => "client_credentials",
            Self::RefreshToken => "refresh_token",
            Self::Password => "password",
        }
    }
}
