//! What the gateway's request handlers share: [`Inner`] (schemas, broker, settings, auth, the
//! OAuth client), the connection's [`Peer`], and the names the gateway decides calls under.
//! A leaf of the crate's module graph: the gateway builds it, the handlers (`handler`,
//! `oauth`, `metadata`, `auth`) read it, and it imports none of them.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::HeaderName;
use micro_core::{
    Channel, Client, auth::AuthLayer, broker::SharedBroker, transport::ConnectionConfig,
};
use micro_platform::proto::auth::v1::auth_client::AuthClient;
use tokio::{sync::Mutex, time::Instant};

use super::schemas::Schemas;

/// The name the gateway's own endpoints are decided under (`GET /openapi.json` as
/// `service:micro.api:Gateway.OpenAPI`), and the name to give its [`AuthLayer`].
pub const GATEWAY_NAME: &str = "micro.api";
/// The registered name of the auth service.
pub(crate) const AUTH_SERVICE: &str = "micro.auth";

/// What every request handler shares.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) schemas: Schemas,
    pub(crate) broker: Option<SharedBroker>,
    pub(crate) config: Config,
    /// Decides every call when set.
    pub(crate) auth: Option<AuthLayer>,
    /// The OAuth2 token endpoint and the JWKS, through the auth service.
    pub(crate) oauth: OAuth,
}

/// The TCP peer of a request's connection, put in its extensions by [`Gateway::serve`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

/// The gateway's settings.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) timeout: Duration,
    pub(crate) max_body: usize,
    pub(crate) max_header_size: usize,
    pub(crate) header_read_timeout: Duration,
    pub(crate) body_read_timeout: Duration,
    pub(crate) headers: Vec<HeaderName>,
    pub(crate) cors_origins: Vec<String>,
    pub(crate) title: String,
    pub(crate) public_openapi: bool,
    pub(crate) connections: ConnectionConfig,
}

/// The auth service's client and the cached JWK Set.
#[derive(Debug)]
pub(crate) struct OAuth {
    pub(crate) client: AuthClient<Channel>,
    pub(crate) timeout: Duration,
    /// The last JWK Set and when it was fetched; held while fetching (single flight).
    pub(crate) jwks: Mutex<Option<(Instant, Bytes)>>,
}

// === impl OAuth ===

impl OAuth {
    pub(crate) fn new(client: &Client, timeout: Duration) -> Self {
        Self {
            client: AuthClient::new(client.channel(AUTH_SERVICE)),
            timeout,
            jwks: Mutex::new(None),
        }
    }
}
