//! Transport security: TLS and mutual TLS for [`Service`](crate::Service)s and
//! [`Client`](crate::Client)s, with certificates reloaded from disk without a restart.
//!
//! rustls with the `ring` provider; TLS 1.2 and 1.3; ALPN `h2`. The builders need the cargo
//! feature `tls`; without it [`ServerTls`] and [`ClientTls`] exist but cannot be built,
//! their `from_env` refuses any `MICRO_TLS_*` variable with [`TlsError::NotCompiled`], and a
//! node registered with `transport=tls` cannot be called.
//!
//! - [`ServerTls`]: the server's certificate chain and key, and optionally a CA whose
//!   client certificates are accepted ([`ClientAuth::Required`] for mutual TLS). Give it to
//!   [`ServiceBuilder::tls`](crate::ServiceBuilder::tls); the node is then registered with
//!   metadata [`TRANSPORT_KEY`]`=`[`TRANSPORT_TLS`], so clients know to dial it with TLS.
//! - [`ClientTls`]: the CAs a client trusts, and optionally its own certificate and key.
//!   Give it to [`ClientBuilder::tls`](crate::ClientBuilder::tls): nodes registered with
//!   `transport=tls` are dialed with TLS, the others in plaintext as before. The name
//!   verified is the host of the node's address unless [`ClientTlsBuilder::server_name`]
//!   overrides it.
//!
//! # Reload
//!
//! Both re-read their files every [`DEFAULT_RELOAD_INTERVAL`] (configurable; zero turns
//! polling off) and on an explicit `reload()`. A new configuration is swapped in
//! atomically: handshakes after the swap use it, connections already open keep theirs.
//! Files that fail to load (missing, half-written, a key that does not match the
//! certificate) leave the configuration in use as it is, and are logged as an error; a
//! poll retries on the next change. Replace the certificate and key together (write both,
//! then rename them into place): a poll between the two writes sees a mismatch and waits
//! for the second.
//!
//! # Environment
//!
//! | variable | meaning |
//! |---|---|
//! | `MICRO_TLS_CERT` | server: certificate chain (PEM), leaf first |
//! | `MICRO_TLS_KEY` | server: private key (PEM: PKCS#8, PKCS#1 or SEC1) |
//! | `MICRO_TLS_CLIENT_CA` | server: CA certificates (PEM) whose client certificates are accepted |
//! | `MICRO_TLS_CLIENT_AUTH` | server: `required` (default with a client CA) or `optional` |
//! | `MICRO_TLS_CA` | client: CA certificates (PEM) to trust for servers |
//! | `MICRO_TLS_CLIENT_CERT` | client: own certificate chain (PEM), for mutual TLS |
//! | `MICRO_TLS_CLIENT_KEY` | client: own private key (PEM) |
//! | `MICRO_TLS_SERVER_NAME` | client: name to verify instead of the node address' host |
//! | `MICRO_TLS_RELOAD_INTERVAL` | both: how often files are polled (`10s`, `500ms`; `0` off) |
//!
//! [`Service`](crate::Service) reads the server variables (and the client ones, for
//! [`Service::client`](crate::Service::client)) when no TLS was set in code;
//! [`ServerTls::from_env`] and [`ClientTls::from_env`] read them for other uses.
//!
//! # Examples
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use micro_core::{
//!     Client, Service,
//!     tls::{ClientAuth, ClientTls, ServerTls},
//! };
//!
//! let server_tls = ServerTls::builder("node.crt", "node.key")
//!     .client_ca("clients-ca.crt", ClientAuth::Required)
//!     .build()?;
//! let running = Service::builder("greeter").tls(server_tls).build()?.start().await?;
//!
//! let client_tls = ClientTls::builder()
//!     .ca("ca.crt")
//!     .identity("client.crt", "client.key")
//!     .build()?;
//! let client = Client::builder().tls(client_tls).build()?;
//! // GreeterClient::new(client.channel("greeter"))...
//! # drop((running, client));
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "tls")]
mod client;
#[cfg(not(feature = "tls"))]
mod disabled;
mod error;
#[cfg(feature = "tls")]
mod pem;
#[cfg(feature = "tls")]
mod reload;
#[cfg(feature = "tls")]
mod server;

#[cfg(feature = "tls")]
pub use client::{ClientTls, ClientTlsBuilder};
#[cfg(not(feature = "tls"))]
pub use disabled::{ClientTls, ServerTls};
pub use error::TlsError;
#[cfg(feature = "tls")]
pub use server::{ServerTls, ServerTlsBuilder};

use std::{ffi::OsString, time::Duration};

/// The node metadata key that says how to connect to a node.
pub const TRANSPORT_KEY: &str = "transport";
/// The [`TRANSPORT_KEY`] value of a node that only speaks TLS. Nodes without the key speak
/// plaintext HTTP/2.
pub const TRANSPORT_TLS: &str = "tls";

/// How often certificate files are checked for changes. Default is 10 seconds.
pub const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// How long a TLS handshake may take before the connection is closed. Default is
/// 10 seconds.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Server: certificate chain file.
pub const CERT_ENV: &str = "MICRO_TLS_CERT";
/// Server: private key file.
pub const KEY_ENV: &str = "MICRO_TLS_KEY";
/// Server: CA file for client certificates.
pub const CLIENT_CA_ENV: &str = "MICRO_TLS_CLIENT_CA";
/// Server: `required` or `optional`.
pub const CLIENT_AUTH_ENV: &str = "MICRO_TLS_CLIENT_AUTH";
/// Client: CA file to trust.
pub const CA_ENV: &str = "MICRO_TLS_CA";
/// Client: own certificate chain file.
pub const CLIENT_CERT_ENV: &str = "MICRO_TLS_CLIENT_CERT";
/// Client: own private key file.
pub const CLIENT_KEY_ENV: &str = "MICRO_TLS_CLIENT_KEY";
/// Client: server name to verify.
pub const SERVER_NAME_ENV: &str = "MICRO_TLS_SERVER_NAME";
/// Both: the reload polling interval.
pub const RELOAD_INTERVAL_ENV: &str = "MICRO_TLS_RELOAD_INTERVAL";

/// Whether a server asks clients for a certificate signed by its client CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// Clients must present a valid certificate: mutual TLS. The default.
    #[default]
    Required,
    /// Clients may connect without a certificate; one presented must be valid.
    Optional,
}

/// Whether `metadata` (a node's) says the node speaks TLS.
pub fn is_tls_node(metadata: &std::collections::BTreeMap<String, String>) -> bool {
    metadata.get(TRANSPORT_KEY).map(String::as_str) == Some(TRANSPORT_TLS)
}

#[cfg(feature = "tls")]
fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads environment variables; tests pass a map instead of the process' environment.
trait Lookup {
    fn get(&self, var: &str) -> Option<OsString>;
}

struct ProcessEnv;

impl Lookup for ProcessEnv {
    fn get(&self, var: &str) -> Option<OsString> {
        std::env::var_os(var)
    }
}

#[cfg(test)]
impl Lookup for std::collections::HashMap<&str, &str> {
    fn get(&self, var: &str) -> Option<OsString> {
        std::collections::HashMap::get(self, var).map(OsString::from)
    }
}

/// A variable's trimmed value; empty counts as unset.
fn env_string(env: &dyn Lookup, var: &'static str) -> Result<Option<String>, TlsError> {
    match env.get(var) {
        None => Ok(None),
        Some(value) => match value.into_string() {
            Ok(value) if value.trim().is_empty() => Ok(None),
            Ok(value) => Ok(Some(value.trim().to_owned())),
            Err(value) => Err(TlsError::InvalidEnv {
                var,
                value: value.to_string_lossy().into_owned(),
                reason: "not valid UTF-8".to_owned(),
            }),
        },
    }
}

/// `MICRO_TLS_RELOAD_INTERVAL`: `None` when unset, zero to turn polling off.
#[cfg(feature = "tls")]
fn env_reload_interval(env: &dyn Lookup) -> Result<Option<Duration>, TlsError> {
    let Some(value) = env_string(env, RELOAD_INTERVAL_ENV)? else {
        return Ok(None);
    };
    if value == "0" {
        return Ok(Some(Duration::ZERO));
    }
    crate::duration::parse(&value)
        .map(Some)
        .map_err(|err| TlsError::InvalidEnv {
            var: RELOAD_INTERVAL_ENV,
            value,
            reason: err.to_string(),
        })
}
