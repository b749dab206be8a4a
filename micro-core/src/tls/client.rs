//! [`ClientTls`]: which servers a client trusts, and the certificate it shows them.

use std::{fmt, io, path::PathBuf, sync::Arc, time::Duration};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;

use super::{
    CA_ENV, CLIENT_CERT_ENV, CLIENT_KEY_ENV, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_RELOAD_INTERVAL,
    Lookup, ProcessEnv, SERVER_NAME_ENV, TlsError, env_reload_interval, env_string,
    pem::{self, PemFile},
    reload::Reloading,
};
use crate::io::BoxIo;

/// A client's TLS configuration: the CA certificates it trusts, and optionally its own
/// certificate and key for mutual TLS. The files are reloaded when they change; see
/// [the module docs](super#reload).
///
/// Cloning is cheap; clones share the configuration and its reloads.
///
/// # Examples
///
/// ```no_run
/// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use micro_core::{Client, tls::ClientTls};
///
/// let tls = ClientTls::builder()
///     .ca("/etc/micro/ca.crt")
///     .identity("/etc/micro/client.crt", "/etc/micro/client.key")
///     .build()?;
/// let client = Client::builder().tls(tls).build()?;
/// # drop(client);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ClientTls {
    config: Reloading<ClientConfig>,
    server_name: Option<ServerName<'static>>,
    handshake_timeout: Duration,
}

/// Configures a [`ClientTls`]; made by [`ClientTls::builder`].
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ClientTlsBuilder {
    cas: Vec<PathBuf>,
    identity: Option<(PathBuf, PathBuf)>,
    server_name: Option<String>,
    reload_interval: Option<Duration>,
    handshake_timeout: Option<Duration>,
}

// === impl ClientTls ===

impl ClientTls {
    /// Starts configuring client TLS.
    pub fn builder() -> ClientTlsBuilder {
        ClientTlsBuilder::default()
    }

    /// TLS trusting the CA certificates in `ca` (PEM), without a client certificate.
    ///
    /// # Errors
    /// As [`ClientTlsBuilder::build`].
    pub fn from_ca_file(ca: impl Into<PathBuf>) -> Result<Self, TlsError> {
        Self::builder().ca(ca).build()
    }

    /// TLS from `MICRO_TLS_CA`, `MICRO_TLS_CLIENT_CERT`, `MICRO_TLS_CLIENT_KEY`,
    /// `MICRO_TLS_SERVER_NAME` and `MICRO_TLS_RELOAD_INTERVAL`; `None` when `MICRO_TLS_CA`
    /// is not set.
    ///
    /// # Errors
    /// When a client certificate is set without its key (or the other way round) or
    /// without `MICRO_TLS_CA`, or the files fail to load.
    pub fn from_env() -> Result<Option<Self>, TlsError> {
        Self::from_lookup(&ProcessEnv)
    }

    fn from_lookup(env: &dyn Lookup) -> Result<Option<Self>, TlsError> {
        let ca = env_string(env, CA_ENV)?;
        let cert = env_string(env, CLIENT_CERT_ENV)?;
        let key = env_string(env, CLIENT_KEY_ENV)?;
        let Some(ca) = ca else {
            if let Some((var, value)) = [(CLIENT_CERT_ENV, cert), (CLIENT_KEY_ENV, key)]
                .into_iter()
                .find_map(|(var, value)| value.map(|value| (var, value)))
            {
                return Err(TlsError::InvalidEnv {
                    var,
                    value,
                    reason: format!("needs {CA_ENV} (the CA that signs the servers' certificates)"),
                });
            }
            return Ok(None);
        };
        let mut builder = Self::builder().ca(ca);
        match (cert, key) {
            (Some(cert), Some(key)) => builder = builder.identity(cert, key),
            (Some(cert), None) => {
                return Err(TlsError::InvalidEnv {
                    var: CLIENT_CERT_ENV,
                    value: cert,
                    reason: format!("needs {CLIENT_KEY_ENV} too (the certificate's private key)"),
                });
            }
            (None, Some(key)) => {
                return Err(TlsError::InvalidEnv {
                    var: CLIENT_KEY_ENV,
                    value: key,
                    reason: format!("needs {CLIENT_CERT_ENV} too (the key's certificate chain)"),
                });
            }
            (None, None) => {}
        }
        if let Some(name) = env_string(env, SERVER_NAME_ENV)? {
            builder = builder.server_name(name);
        }
        if let Some(interval) = env_reload_interval(env)? {
            builder = builder.reload_interval(interval);
        }
        builder.build().map(Some)
    }

    /// Reads the files again now and swaps the new configuration in; new connections use
    /// it, open ones keep theirs.
    ///
    /// # Errors
    /// When a file fails to load; the configuration in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.config.reload()
    }

    /// How many times the configuration was replaced since it was built.
    pub fn generation(&self) -> u64 {
        self.config.generation()
    }

    /// A receiver of [`generation`](Self::generation), changed at each reload.
    pub fn reloads(&self) -> watch::Receiver<u64> {
        self.config.subscribe()
    }

    /// Runs the TLS handshake over `io`, a connection to `address` (`host:port`),
    /// verifying the server's certificate for the override name or the address' host.
    pub(crate) async fn connect(&self, io: BoxIo, address: &str) -> io::Result<BoxIo> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => server_name(host(address)).map_err(|err| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{err}; set ClientTlsBuilder::server_name"),
                )
            })?,
        };
        let connector = TlsConnector::from(self.config.current());
        match tokio::time::timeout(self.handshake_timeout, connector.connect(name, io)).await {
            Ok(Ok(stream)) => Ok(Box::new(stream)),
            Ok(Err(err)) => Err(io::Error::new(
                err.kind(),
                format!("TLS handshake failed: {err}"),
            )),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("TLS handshake timed out after {:?}", self.handshake_timeout),
            )),
        }
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("files", &self.config.files().collect::<Vec<_>>())
            .field("server_name", &self.server_name)
            .field("reload_interval", &self.config.interval())
            .field("generation", &self.generation())
            .finish()
    }
}

// === impl ClientTlsBuilder ===

impl ClientTlsBuilder {
    /// Trusts the CA certificates in `ca` (PEM, one or more); call again for more files.
    /// At least one is needed.
    pub fn ca(mut self, ca: impl Into<PathBuf>) -> Self {
        self.cas.push(ca.into());
        self
    }

    /// Presents the certificate chain in `cert` (PEM, leaf first) with the private key in
    /// `key` to servers that ask for one (mutual TLS). Default is none.
    pub fn identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.identity = Some((cert.into(), key.into()));
        self
    }

    /// Verifies every server's certificate for `name` (a DNS name or IP address) instead
    /// of the host of the node's address. Default is the node address' host.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Sets how often the files are checked for changes; zero turns polling off
    /// ([`ClientTls::reload`] still works). Default is
    /// [`DEFAULT_RELOAD_INTERVAL`](super::DEFAULT_RELOAD_INTERVAL).
    pub fn reload_interval(mut self, interval: Duration) -> Self {
        self.reload_interval = Some(interval);
        self
    }

    /// Sets how long a handshake may take. Default is
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`](super::DEFAULT_HANDSHAKE_TIMEOUT).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = Some(timeout);
        self
    }

    /// Loads the files and builds the configuration.
    ///
    /// # Errors
    /// [`TlsError`] naming the file and what is wrong: missing or unreadable, not PEM, no
    /// private key, a key that does not match the certificate, an unusable CA; or no CA
    /// given, or an invalid server name.
    pub fn build(self) -> Result<ClientTls, TlsError> {
        if self.cas.is_empty() {
            return Err(TlsError::NoTrustedCa);
        }
        let server_name = self.server_name.as_deref().map(server_name).transpose()?;
        let mut files: Vec<_> = self
            .cas
            .iter()
            .map(|ca| (pem::CA_CERTIFICATE, ca.clone()))
            .collect();
        if let Some((cert, key)) = &self.identity {
            files.push((pem::CERTIFICATE, cert.clone()));
            files.push((pem::PRIVATE_KEY, key.clone()));
        }
        let (cas, identity) = (self.cas, self.identity);
        let build = move |contents: &[Vec<u8>]| {
            let (ca_pems, identity_pems) = contents.split_at(cas.len());
            let identity = match (&identity, identity_pems) {
                (Some((cert, key)), [cert_pem, key_pem]) => Some((
                    (cert.as_path(), cert_pem.as_slice()),
                    (key.as_path(), key_pem.as_slice()),
                )),
                _ => None,
            };
            client_config(cas.iter().zip(ca_pems), identity)
        };
        let config = Reloading::load(
            "client",
            files,
            Some(self.reload_interval.unwrap_or(DEFAULT_RELOAD_INTERVAL)),
            Box::new(build),
        )?;
        Ok(ClientTls {
            config,
            server_name,
            handshake_timeout: self.handshake_timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT),
        })
    }
}

fn client_config<'a>(
    cas: impl Iterator<Item = (&'a PathBuf, &'a Vec<u8>)>,
    identity: Option<(PemFile<'_>, PemFile<'_>)>,
) -> Result<ClientConfig, TlsError> {
    let provider = super::provider();
    let mut roots = RootCertStore::empty();
    for (path, pem) in cas {
        pem::add_roots(&mut roots, path, pem)?;
    }
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => {
            let (chain, key) = pem::certified_key(&provider, cert, key)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(TlsError::Config)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The host of `host:port`, `[v6]:port` or a bare host.
fn host(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => address,
    }
}

fn server_name(name: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(name.to_owned()).map_err(|err| TlsError::ServerName {
        name: name.to_owned(),
        reason: err.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host("127.0.0.1:9090"), "127.0.0.1");
        assert_eq!(host("[::1]:9090"), "::1");
        assert_eq!(host("node-1.example:443"), "node-1.example");
        assert_eq!(host("localhost"), "localhost");
        assert!(server_name("not a name").is_err());
        assert!(matches!(server_name("::1"), Ok(ServerName::IpAddress(_))));
    }

    #[test]
    fn env_needs_a_ca() {
        assert!(ClientTls::from_lookup(&HashMap::new()).unwrap().is_none());
        let cert_only = HashMap::from([(CLIENT_CERT_ENV, "/tls/client.crt")]);
        let err = ClientTls::from_lookup(&cert_only).unwrap_err().to_string();
        assert!(
            err.contains("MICRO_TLS_CLIENT_CERT") && err.contains("needs MICRO_TLS_CA"),
            "{err}"
        );
        let no_key = HashMap::from([(CA_ENV, "/tls/ca.crt"), (CLIENT_CERT_ENV, "/tls/c.crt")]);
        let err = ClientTls::from_lookup(&no_key).unwrap_err().to_string();
        assert!(err.contains("needs MICRO_TLS_CLIENT_KEY"), "{err}");
        assert!(matches!(
            ClientTls::builder().build(),
            Err(TlsError::NoTrustedCa)
        ));
    }
}
