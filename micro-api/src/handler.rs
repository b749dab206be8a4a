//! Routing a request and answering it: REST routes first, then `/openapi.json`,
//! `/event/{topic}`, and the RPC forms `/{service}/{Service}/{Method}` and
//! `/{service}/{Method}`.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::State,
    response::{IntoResponse, Response},
};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, Method as HttpMethod, StatusCode, header, request::Parts};
use http_body_util::BodyExt;
use micro_core::broker::{self, BrokerError, Message};
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor};
use tonic::{Code, Status, codec::Streaming, metadata::MetadataMap};

use super::{
    auth,
    error::ApiError,
    metadata, oauth, openapi,
    rest::{RestMatch, Route},
    schemas::{Entry, Method},
    state::{Inner, Peer},
};
use crate::dynamic::{self, DynamicCodec};

/// How many bytes past the limit are read (and dropped) around a 413, so that the client,
/// still sending, reads the answer instead of a reset connection.
const MAX_DRAIN: usize = 4 * 1024 * 1024;

/// The route of the OpenAPI document.
const OPENAPI_PATH: &str = "/openapi.json";

/// How replies are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// One JSON document.
    Json,
    /// One JSON document per line (`application/x-ndjson`).
    Ndjson,
    /// Server-sent events (`text/event-stream`).
    Sse,
}

/// How a reply message becomes JSON: whole, or through a REST route's `response_body`.
#[derive(Debug, Clone)]
enum Shape {
    Rpc,
    Rest(Route),
}

/// The gateway's only handler.
pub(crate) async fn handle(
    State(inner): State<Arc<Inner>>,
    request: http::Request<Body>,
) -> Response {
    let (parts, body) = request.into_parts();
    if let Some(error) = declared_too_large(&inner, &parts.headers) {
        drain(&inner, &parts, body);
        return error.into_response();
    }
    match route(&inner, parts, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn route(inner: &Inner, parts: Parts, body: Body) -> Result<Response, ApiError> {
    let path = parts.uri.path();
    // The gateway's own unauthenticated endpoints, by exact path.
    if path == oauth::TOKEN_PATH {
        return Ok(oauth::token(inner, &parts, body).await);
    }
    if path == oauth::JWKS_PATH {
        return oauth::jwks(inner, &parts).await;
    }
    let rest = inner.schemas.rest();
    for entry in rest.iter() {
        if let Some(matched) = entry.schema.rest.find(&parts.method, path) {
            return rest_call(inner, entry, &matched, &parts, body).await;
        }
    }
    if rest.iter().any(|entry| {
        entry
            .schema
            .rest
            .path_matches_other_method(&parts.method, path)
    }) {
        let mut allowed: Vec<String> = rest
            .iter()
            .flat_map(|entry| entry.schema.rest.allowed_methods(path))
            .map(|method| method.as_str().to_owned())
            .collect();
        allowed.sort();
        allowed.dedup();
        return Err(ApiError::method_not_allowed(
            allowed.join(", "),
            format!("{path} does not take {}", parts.method),
        ));
    }
    if path == OPENAPI_PATH {
        if parts.method != HttpMethod::GET && parts.method != HttpMethod::HEAD {
            return Err(ApiError::method_not_allowed(
                "GET, HEAD",
                format!("{OPENAPI_PATH} takes GET"),
            ));
        }
        if !inner.config.public_openapi {
            auth::authorize(
                inner.auth.as_ref(),
                auth::GATEWAY_SERVICE,
                auth::OPENAPI_PATH,
                &parts.headers,
            )?;
        }
        return Ok(openapi_document(inner).await);
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (service, grpc_service, method) = match segments.as_slice() {
        ["event", topic] => return publish(inner, topic, &parts, body).await,
        [service, grpc_service, method] => (*service, Some(*grpc_service), *method),
        [service, method] => (*service, None, *method),
        _ => {
            return Err(ApiError::not_found(format!(
                "no route for {path}: call methods as POST /{{service}}/{{Service}}/{{Method}}"
            )));
        }
    };
    if service.is_empty() || method.is_empty() || grpc_service.is_some_and(str::is_empty) {
        return Err(ApiError::not_found(format!("no route for {path}")));
    }
    if parts.method != HttpMethod::POST {
        return Err(ApiError::method_not_allowed(
            "POST",
            format!("methods are called with POST, not {}", parts.method),
        ));
    }
    let entry = inner.schemas.get(service).await?;
    let method = entry.method(grpc_service, method)?;
    auth::authorize(
        inner.auth.as_ref(),
        &entry.schema.name,
        method.path.path(),
        &parts.headers,
    )?;
    let format = negotiate(&parts.headers, method.descriptor.is_server_streaming())?;
    let body = read_body(inner, &parts.headers, body).await?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::invalid("the request body is not UTF-8"))?;
    let requests = parse_body(&method.descriptor, text)?;
    call(inner, &entry, &method, &parts, requests, format, Shape::Rpc).await
}

/// The request messages of `text`. The common case, one object, is read straight into the
/// message; anything else, and any error, goes the slower way that names the field at
/// fault.
fn parse_body(descriptor: &MethodDescriptor, text: &str) -> Result<Vec<DynamicMessage>, ApiError> {
    let input = descriptor.input();
    let streaming = descriptor.is_client_streaming();
    if !streaming && text.trim_start().starts_with('{') {
        let mut json = serde_json::Deserializer::from_str(text);
        if let Ok(message) = DynamicMessage::deserialize(input.clone(), &mut json)
            && json.end().is_ok()
        {
            return Ok(vec![message]);
        }
    }
    dynamic::parse_requests(&input, text, streaming).map_err(ApiError::invalid)
}

/// A request that matched a REST route.
async fn rest_call(
    inner: &Inner,
    entry: &Arc<Entry>,
    matched: &RestMatch<'_>,
    parts: &Parts,
    body: Body,
) -> Result<Response, ApiError> {
    let descriptor = &matched.route.method;
    let method = entry
        .method(
            Some(descriptor.parent_service().full_name()),
            descriptor.name(),
        )
        .map_err(|_| ApiError::new(Code::Internal, "REST route of an unknown method"))?;
    auth::authorize(
        inner.auth.as_ref(),
        &entry.schema.name,
        method.path.path(),
        &parts.headers,
    )?;
    let format = negotiate(&parts.headers, descriptor.is_server_streaming())?;
    let body = read_body(inner, &parts.headers, body).await?;
    let request = matched
        .request(parts.uri.query(), &body)
        .map_err(ApiError::invalid)?;
    let shape = Shape::Rest(matched.route.clone());
    call(inner, entry, &method, parts, vec![request], format, shape).await
}

/// Calls `method` with `requests` and writes the reply in `format`.
async fn call(
    inner: &Inner,
    entry: &Entry,
    method: &Method,
    parts: &Parts,
    requests: Vec<DynamicMessage>,
    format: Format,
    shape: Shape,
) -> Result<Response, ApiError> {
    let headers = &parts.headers;
    let timeout = metadata::timeout(headers, inner.config.timeout)?;
    let mut request_metadata = metadata::request_metadata(headers, &inner.config.headers)?;
    if inner.auth.is_some() {
        let forwarded = inner.config.headers.contains(&header::AUTHORIZATION);
        auth::pin_authorization(&mut request_metadata, headers, forwarded);
    }
    metadata::forwarded_for(&mut request_metadata, parts.extensions.get::<Peer>());
    let descriptor: &MethodDescriptor = &method.descriptor;
    let codec = DynamicCodec::new(descriptor.output());
    let mut grpc = tonic::client::Grpc::new(entry.channel.clone());
    grpc.ready().await.map_err(|err| {
        ApiError::new(
            Code::Unavailable,
            format!("service {}: {err}", entry.schema.name),
        )
    })?;
    let path = method.path.clone();
    let pool = &entry.schema.pool;
    let failed = |status: Status| ApiError::from_status(&status, Some(pool));
    let streaming_request = descriptor.is_client_streaming();
    if descriptor.is_server_streaming() {
        let replies = if streaming_request {
            let request = request(
                request_metadata,
                futures_util::stream::iter(requests),
                timeout,
            );
            grpc.streaming(request, path, codec).await
        } else {
            let message = single(requests)?;
            grpc.server_streaming(request(request_metadata, message, timeout), path, codec)
                .await
        }
        .map_err(failed)?;
        let (reply_metadata, replies, _) = replies.into_parts();
        let body = Body::from_stream(stream_body(replies, format, shape, pool.clone()));
        let mut response = Response::new(body);
        let content_type = match format {
            Format::Sse => "text/event-stream",
            Format::Json | Format::Ndjson => "application/x-ndjson",
        };
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        metadata::reply_headers(
            &reply_metadata,
            &inner.config.headers,
            response.headers_mut(),
        );
        return Ok(response);
    }
    let reply = if streaming_request {
        let request = request(
            request_metadata,
            futures_util::stream::iter(requests),
            timeout,
        );
        grpc.client_streaming(request, path, codec).await
    } else {
        let message = single(requests)?;
        grpc.unary(request(request_metadata, message, timeout), path, codec)
            .await
    };
    let (reply_metadata, reply, _) = reply.map_err(failed)?.into_parts();
    let json = render(&shape, &reply)?;
    let mut response = (StatusCode::OK, json).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    metadata::reply_headers(
        &reply_metadata,
        &inner.config.headers,
        response.headers_mut(),
    );
    Ok(response)
}

fn request<T>(metadata: MetadataMap, message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::from_parts(metadata, http::Extensions::default(), message);
    request.set_timeout(timeout);
    request
}

fn single(requests: Vec<DynamicMessage>) -> Result<DynamicMessage, ApiError> {
    requests
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::invalid("no request message"))
}

/// One reply as JSON text.
fn render(shape: &Shape, reply: &DynamicMessage) -> Result<String, ApiError> {
    let rendered = match shape {
        Shape::Rpc => dynamic::to_json(reply),
        Shape::Rest(route) => {
            let matched = RestMatch {
                route,
                bindings: Vec::new(),
            };
            matched.response(reply).map(|value| value.to_string())
        }
    };
    rendered.map_err(|err| ApiError::new(Code::Internal, err))
}

/// The body of a streamed reply: each message as it arrives, then an error if the call
/// failed.
fn stream_body(
    replies: Streaming<DynamicMessage>,
    format: Format,
    shape: Shape,
    pool: DescriptorPool,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    futures_util::stream::unfold(Some(replies), move |replies| {
        let shape = shape.clone();
        let pool = pool.clone();
        async move {
            let mut replies = replies?;
            let frame = match replies.next().await {
                None => return None,
                Some(Ok(reply)) => match render(&shape, &reply) {
                    Ok(json) => {
                        let frame = match format {
                            Format::Sse => format!("data: {json}\n\n"),
                            Format::Json | Format::Ndjson => format!("{json}\n"),
                        };
                        return Some((Ok(Bytes::from(frame)), Some(replies)));
                    }
                    Err(error) => error,
                },
                Some(Err(status)) => ApiError::from_status(&status, Some(&pool)),
            };
            let error = frame.to_json();
            let frame = match format {
                Format::Sse => format!("event: error\ndata: {error}\n\n"),
                Format::Json | Format::Ndjson => {
                    format!("{}\n", serde_json::json!({ "error": error }))
                }
            };
            Some((Ok(Bytes::from(frame)), None))
        }
    })
}

/// The reply format the `Accept` header allows: JSON for unary methods, NDJSON or SSE for
/// server-streaming ones (NDJSON unless SSE comes first); 406 for anything else.
fn negotiate(headers: &HeaderMap, streaming: bool) -> Result<Format, ApiError> {
    let mut any = false;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            any = true;
            let media = item.split(';').next().unwrap_or_default().trim();
            let media = media.to_ascii_lowercase();
            let format = match media.as_str() {
                "*/*" | "application/*" | "application/json" if !streaming => Format::Json,
                "*/*"
                | "application/*"
                | "application/json"
                | "application/x-ndjson"
                | "application/jsonl" => Format::Ndjson,
                "text/event-stream" | "text/*" if streaming => Format::Sse,
                _ => continue,
            };
            return Ok(format);
        }
    }
    if !any {
        return Ok(if streaming {
            Format::Ndjson
        } else {
            Format::Json
        });
    }
    let offered = if streaming {
        "application/x-ndjson or text/event-stream"
    } else {
        "application/json"
    };
    Err(ApiError::with_status(
        StatusCode::NOT_ACCEPTABLE,
        Code::InvalidArgument,
        format!("the reply can only be {offered}"),
    ))
}

fn too_large(max: usize) -> ApiError {
    ApiError::with_status(
        StatusCode::PAYLOAD_TOO_LARGE,
        Code::ResourceExhausted,
        format!("the request body is larger than the limit of {max} bytes"),
    )
}

/// The 413 of a request whose `Content-Length` is over the limit: answered from the headers,
/// before any of the body is read (and so before hyper sends `100 Continue`).
fn declared_too_large(inner: &Inner, headers: &HeaderMap) -> Option<ApiError> {
    let max = inner.config.max_body;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())?;
    (declared > max as u64).then(|| too_large(max))
}

/// After an early answer on HTTP/1, reads and drops the body in the background, up to
/// [`MAX_DRAIN`] bytes past the limit and within the body read timeout, so that a client
/// still sending reads the answer instead of a reset connection. Not when the client waits
/// for `100 Continue` (it sends no body after a final answer), nor on HTTP/2 (the stream is
/// reset on its own).
fn drain(inner: &Inner, parts: &Parts, body: Body) {
    let expects_continue = parts
        .headers
        .get(header::EXPECT)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if parts.version > http::Version::HTTP_11 || expects_continue {
        return;
    }
    let most = inner.config.max_body.saturating_add(MAX_DRAIN);
    let read = async move {
        let mut stream = body.into_data_stream();
        let mut seen = 0usize;
        while let Some(Ok(data)) = stream.next().await {
            seen = seen.saturating_add(data.len());
            if seen > most {
                break;
            }
        }
    };
    let timeout = inner.config.body_read_timeout;
    tokio::spawn(async move {
        let _ = tokio::time::timeout(timeout, read).await;
    });
}

/// The request body: at most the limit (413), within the body read timeout (408), JSON
/// when there is one (415). A `Content-Length` over the limit was refused before.
async fn read_body(inner: &Inner, headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let max = inner.config.max_body;
    let read = async {
        let mut body = body;
        let mut buffer = BytesMut::new();
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame
                .map_err(|err| ApiError::invalid(format!("cannot read the request body: {err}")))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            seen = seen.saturating_add(data.len());
            if seen > max + MAX_DRAIN {
                break;
            }
            if seen <= max {
                buffer.extend_from_slice(&data);
            }
        }
        if seen > max {
            return Err(too_large(max));
        }
        Ok(buffer.freeze())
    };
    let body = tokio::time::timeout(inner.config.body_read_timeout, read)
        .await
        .map_err(|_| {
            ApiError::with_status(
                StatusCode::REQUEST_TIMEOUT,
                Code::DeadlineExceeded,
                format!(
                    "the request body was not received within {:?}",
                    inner.config.body_read_timeout
                ),
            )
        })??;
    if !body.is_empty()
        && let Some(content_type) = headers.get(header::CONTENT_TYPE)
        && !is_json(content_type)
    {
        return Err(ApiError::with_status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::InvalidArgument,
            format!(
                "the request body must be application/json, not {}",
                String::from_utf8_lossy(content_type.as_bytes())
            ),
        ));
    }
    Ok(body)
}

/// `application/json`, `application/<x>+json`, with any parameters.
fn is_json(content_type: &HeaderValue) -> bool {
    let Ok(value) = content_type.to_str() else {
        return false;
    };
    let media = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

/// `POST /event/{topic}`: the JSON body published on `topic`.
async fn publish(
    inner: &Inner,
    topic: &str,
    parts: &Parts,
    body: Body,
) -> Result<Response, ApiError> {
    if parts.method != HttpMethod::POST {
        return Err(ApiError::method_not_allowed(
            "POST",
            format!("events are published with POST, not {}", parts.method),
        ));
    }
    auth::authorize(
        inner.auth.as_ref(),
        auth::EVENT_SERVICE,
        auth::EVENT_PATH,
        &parts.headers,
    )?;
    broker::validate_topic(topic).map_err(|err| ApiError::invalid(err.to_string()))?;
    let Some(events) = &inner.broker else {
        return Err(ApiError::new(
            Code::Unavailable,
            "events are not served: the gateway has no broker",
        ));
    };
    let body = read_body(inner, &parts.headers, body).await?;
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        Bytes::from_static(b"{}")
    } else {
        serde_json::from_slice::<serde::de::IgnoredAny>(&body)
            .map_err(|err| ApiError::invalid(format!("the event is not valid JSON: {err}")))?;
        body
    };
    let message = Message {
        headers: [("content-type".to_owned(), "application/json".to_owned())]
            .into_iter()
            .collect(),
        body,
    };
    match tokio::time::timeout(inner.config.timeout, events.publish(topic, message)).await {
        Ok(Ok(())) => {
            let mut response = (StatusCode::ACCEPTED, "{}").into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(response)
        }
        // A topic or body the broker refuses is the client's mistake; anything else is the
        // broker's.
        Ok(Err(err @ BrokerError::Invalid { .. })) => Err(ApiError::invalid(format!(
            "cannot publish on {topic}: {err}"
        ))),
        Ok(Err(err)) => Err(ApiError::new(
            Code::Unavailable,
            format!("cannot publish on {topic}: {err}"),
        )),
        Err(_) => Err(ApiError::new(
            Code::DeadlineExceeded,
            format!(
                "publishing on {topic} took longer than {:?}",
                inner.config.timeout
            ),
        )),
    }
}

/// `GET /openapi.json`.
async fn openapi_document(inner: &Inner) -> Response {
    let schemas = inner.schemas.all().await;
    let options = openapi::Options {
        title: inner.config.title.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        events: inner.broker.is_some(),
    };
    let document = openapi::document(&schemas, &options);
    let mut response = (StatusCode::OK, document.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn accept(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn accept_picks_the_format() {
        assert_eq!(negotiate(&HeaderMap::new(), false).unwrap(), Format::Json);
        assert_eq!(negotiate(&HeaderMap::new(), true).unwrap(), Format::Ndjson);
        assert_eq!(negotiate(&accept("*/*"), false).unwrap(), Format::Json);
        assert_eq!(
            negotiate(&accept("text/event-stream"), true).unwrap(),
            Format::Sse
        );
        assert_eq!(
            negotiate(&accept("application/x-ndjson"), true).unwrap(),
            Format::Ndjson
        );
        assert_eq!(
            negotiate(&accept("text/html, application/json;q=0.9"), false).unwrap(),
            Format::Json
        );
        let refused = negotiate(&accept("text/html"), false).unwrap_err();
        assert_eq!(refused.status, StatusCode::NOT_ACCEPTABLE);
        assert!(negotiate(&accept("text/event-stream"), false).is_err());
    }

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "application/problem+json",
        ] {
            assert!(is_json(&HeaderValue::from_static(ok)), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonx",
        ] {
            assert!(!is_json(&HeaderValue::from_static(bad)), "{bad}");
        }
    }
}
