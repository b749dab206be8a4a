//! A plain HTTP/1.1 client over loopback (hyper-util) and its replies.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde_json::Value;

/// How long any one HTTP exchange may take on a loaded machine.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A reply: status, headers, body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "not JSON ({err}): {} {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// A plain HTTP/1.1 client to one gateway, optionally from a given local address.
#[derive(Clone)]
pub struct Http {
    pub client: Client<HttpConnector, Full<Bytes>>,
    pub addr: SocketAddr,
}

impl Http {
    pub fn new(addr: SocketAddr) -> Self {
        Self::from_local(addr, None)
    }

    /// To `addr` given as text (`host:port` as a server printed it).
    pub fn to(addr: &str) -> Self {
        Self::new(
            addr.parse()
                .unwrap_or_else(|err| panic!("not a socket address {addr:?}: {err}")),
        )
    }

    /// Connecting from `local` (another loopback address, e.g. 127.0.0.2).
    pub fn from_local(addr: SocketAddr, local: Option<IpAddr>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_local_address(local);
        Self {
            client: Client::builder(TokioExecutor::new()).build(connector),
            addr,
        }
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Reply {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(body.into())).unwrap();
        let exchange = async {
            let response = self.client.request(request).await.expect("HTTP exchange");
            let (parts, body) = response.into_parts();
            let body = body.collect().await.expect("whole body").to_bytes();
            Reply {
                status: parts.status,
                headers: parts.headers,
                body,
            }
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .expect("HTTP exchange in time")
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: impl Into<Bytes>) -> Reply {
        self.request(
            Method::POST,
            path,
            &[("content-type", "application/json")],
            body,
        )
        .await
    }

    /// `method path` with a JSON body and `authorization: Bearer <token>` when a token
    /// is given.
    pub async fn call_with_token(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Reply {
        let authorization = token.map(|token| format!("Bearer {token}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(value) = &authorization {
            headers.push(("authorization", value.as_str()));
        }
        self.request(method, path, &headers, body).await
    }
}
