//! [`ServerTls`]: what a service presents, and which client certificates it accepts.

use std::{fmt, path::PathBuf, sync::Arc, time::Duration};

use rustls::{RootCertStore, ServerConfig, server::WebPkiClientVerifier};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use super::{
    CERT_ENV, CLIENT_AUTH_ENV, CLIENT_CA_ENV, ClientAuth, DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_RELOAD_INTERVAL, KEY_ENV, Lookup, ProcessEnv, TlsError, env_reload_interval,
    env_string, pem, reload::Reloading,
};

/// A server's TLS configuration: certificate chain, private key, and optionally the CA
/// that signs acceptable client certificates. The files are reloaded when they change;
/// see [the module docs](super#reload).
///
/// Cloning is cheap; clones share the configuration and its reloads.
///
/// # Examples
///
/// ```no_run
/// # fn demo() -> Result<(), micro_core::tls::TlsError> {
/// use micro_core::tls::{ClientAuth, ServerTls};
///
/// let tls = ServerTls::builder("/etc/micro/node.crt", "/etc/micro/node.key")
///     .client_ca("/etc/micro/ca.crt", ClientAuth::Required)
///     .build()?;
/// # drop(tls);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ServerTls {
    config: Reloading<ServerConfig>,
    client_auth: Option<ClientAuth>,
    handshake_timeout: Duration,
}

/// Configures a [`ServerTls`]; made by [`ServerTls::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ServerTlsBuilder {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<(PathBuf, ClientAuth)>,
    reload_interval: Duration,
    handshake_timeout: Duration,
}

// === impl ServerTls ===

impl ServerTls {
    /// Starts configuring TLS with the certificate chain in `cert` (PEM, leaf first) and
    /// its private key in `key` (PEM).
    pub fn builder(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> ServerTlsBuilder {
        ServerTlsBuilder {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
            reload_interval: DEFAULT_RELOAD_INTERVAL,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// TLS with the certificate chain in `cert` and its key in `key`, no client
    /// certificates, default reload and handshake settings.
    ///
    /// # Errors
    /// As [`ServerTlsBuilder::build`].
    pub fn from_files(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Self, TlsError> {
        Self::builder(cert, key).build()
    }

    /// TLS from `MICRO_TLS_CERT`, `MICRO_TLS_KEY`, `MICRO_TLS_CLIENT_CA`,
    /// `MICRO_TLS_CLIENT_AUTH` and `MICRO_TLS_RELOAD_INTERVAL`; `None` when neither
    /// certificate nor key is set.
    ///
    /// # Errors
    /// When only one of certificate and key is set, `MICRO_TLS_CLIENT_AUTH` is set without
    /// a client CA or is not `required`/`optional`, or the files fail to load.
    pub fn from_env() -> Result<Option<Self>, TlsError> {
        Self::from_lookup(&ProcessEnv)
    }

    fn from_lookup(env: &dyn Lookup) -> Result<Option<Self>, TlsError> {
        let cert = env_string(env, CERT_ENV)?;
        let key = env_string(env, KEY_ENV)?;
        let client_ca = env_string(env, CLIENT_CA_ENV)?;
        let client_auth = env_string(env, CLIENT_AUTH_ENV)?;
        let (cert, key) = match (cert, key) {
            (None, None) => {
                if let Some((var, value)) =
                    [(CLIENT_CA_ENV, &client_ca), (CLIENT_AUTH_ENV, &client_auth)]
                        .into_iter()
                        .find_map(|(var, value)| value.clone().map(|value| (var, value)))
                {
                    return Err(TlsError::InvalidEnv {
                        var,
                        value,
                        reason: format!(
                            "needs {CERT_ENV} and {KEY_ENV} (the server's own certificate and key)"
                        ),
                    });
                }
                return Ok(None);
            }
            (Some(cert), Some(key)) => (cert, key),
            (Some(cert), None) => {
                return Err(TlsError::InvalidEnv {
                    var: CERT_ENV,
                    value: cert,
                    reason: format!("needs {KEY_ENV} too (the certificate's private key)"),
                });
            }
            (None, Some(key)) => {
                return Err(TlsError::InvalidEnv {
                    var: KEY_ENV,
                    value: key,
                    reason: format!("needs {CERT_ENV} too (the key's certificate chain)"),
                });
            }
        };
        let auth = match client_auth
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("required") => ClientAuth::Required,
            Some("optional") => ClientAuth::Optional,
            Some(_) => {
                return Err(TlsError::InvalidEnv {
                    var: CLIENT_AUTH_ENV,
                    value: client_auth.unwrap_or_default(),
                    reason: "expected `required` or `optional`".to_owned(),
                });
            }
        };
        let mut builder = Self::builder(cert, key);
        match (client_ca, client_auth) {
            (Some(ca), _) => builder = builder.client_ca(ca, auth),
            (None, Some(value)) => {
                return Err(TlsError::InvalidEnv {
                    var: CLIENT_AUTH_ENV,
                    value,
                    reason: format!(
                        "needs {CLIENT_CA_ENV} (the CA that signs client certificates)"
                    ),
                });
            }
            (None, None) => {}
        }
        if let Some(interval) = env_reload_interval(env)? {
            builder = builder.reload_interval(interval);
        }
        builder.build().map(Some)
    }

    /// Reads the files again now and swaps the new configuration in; new handshakes use
    /// it, open connections keep theirs.
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

    /// A receiver of [`generation`](Self::generation), changed at each reload: to wait for
    /// one.
    pub fn reloads(&self) -> watch::Receiver<u64> {
        self.config.subscribe()
    }

    /// Whether and how client certificates are checked; `None` when they are not asked for.
    pub fn client_auth(&self) -> Option<ClientAuth> {
        self.client_auth
    }

    /// How long a handshake may take.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// An acceptor with the configuration in use now.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.current())
    }

    /// Starts polling the files, if it has not started (needs a tokio runtime).
    pub(crate) fn start_polling(&self) {
        self.config.start_polling();
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.config.files().collect::<Vec<_>>())
            .field("client_auth", &self.client_auth)
            .field("reload_interval", &self.config.interval())
            .field("handshake_timeout", &self.handshake_timeout)
            .field("generation", &self.generation())
            .finish()
    }
}

// === impl ServerTlsBuilder ===

impl ServerTlsBuilder {
    /// Asks clients for a certificate signed by a CA in `ca` (PEM, one or more
    /// certificates): [`ClientAuth::Required`] refuses clients without one (mutual TLS),
    /// [`ClientAuth::Optional`] lets them in. Default is no client certificates.
    pub fn client_ca(mut self, ca: impl Into<PathBuf>, auth: ClientAuth) -> Self {
        self.client_ca = Some((ca.into(), auth));
        self
    }

    /// Sets how often the files are checked for changes; zero turns polling off
    /// ([`ServerTls::reload`] still works). Default is
    /// [`DEFAULT_RELOAD_INTERVAL`](super::DEFAULT_RELOAD_INTERVAL).
    pub fn reload_interval(mut self, interval: Duration) -> Self {
        self.reload_interval = interval;
        self
    }

    /// Sets how long a client may take to complete its handshake before the connection
    /// is closed. Default is [`DEFAULT_HANDSHAKE_TIMEOUT`](super::DEFAULT_HANDSHAKE_TIMEOUT).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Loads the files and builds the configuration.
    ///
    /// # Errors
    /// [`TlsError`] naming the file and what is wrong: missing or unreadable, not PEM, no
    /// private key, a key that does not match the certificate, an unusable CA.
    pub fn build(self) -> Result<ServerTls, TlsError> {
        let mut files = vec![
            (pem::CERTIFICATE, self.cert.clone()),
            (pem::PRIVATE_KEY, self.key.clone()),
        ];
        if let Some((ca, _)) = &self.client_ca {
            files.push((pem::CA_CERTIFICATE, ca.clone()));
        }
        let client_auth = self.client_ca.as_ref().map(|(_, auth)| *auth);
        let (cert, key, ca) = (self.cert, self.key, self.client_ca.map(|(ca, _)| ca));
        let build = move |contents: &[Vec<u8>]| {
            server_config(
                (&cert, &contents[0]),
                (&key, &contents[1]),
                ca.as_ref().zip(contents.get(2)),
                client_auth.unwrap_or_default(),
            )
        };
        let config = Reloading::load("server", files, Some(self.reload_interval), Box::new(build))?;
        Ok(ServerTls {
            config,
            client_auth,
            handshake_timeout: self.handshake_timeout,
        })
    }
}

fn server_config(
    (cert, cert_pem): (&PathBuf, &Vec<u8>),
    (key, key_pem): (&PathBuf, &Vec<u8>),
    client_ca: Option<(&PathBuf, &Vec<u8>)>,
    auth: ClientAuth,
) -> Result<ServerConfig, TlsError> {
    let provider = super::provider();
    let (chain, key) = pem::certified_key(&provider, (cert, cert_pem), (key, key_pem))?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some((path, ca_pem)) => {
            let mut roots = RootCertStore::empty();
            pem::add_roots(&mut roots, path, ca_pem)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier.build().map_err(|err| TlsError::Certificate {
                what: pem::CA_CERTIFICATE,
                path: path.clone(),
                reason: err.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn env_needs_certificate_and_key_together() {
        let none = HashMap::new();
        assert!(ServerTls::from_lookup(&none).unwrap().is_none());

        let cert_only = HashMap::from([(CERT_ENV, "/tls/node.crt")]);
        let err = ServerTls::from_lookup(&cert_only).unwrap_err().to_string();
        assert!(
            err.contains("MICRO_TLS_CERT") && err.contains("needs MICRO_TLS_KEY"),
            "{err}"
        );

        let ca_only = HashMap::from([(CLIENT_CA_ENV, "/tls/ca.crt")]);
        let err = ServerTls::from_lookup(&ca_only).unwrap_err().to_string();
        assert!(err.contains("MICRO_TLS_CLIENT_CA"), "{err}");

        let bad_auth = HashMap::from([
            (CERT_ENV, "/tls/node.crt"),
            (KEY_ENV, "/tls/node.key"),
            (CLIENT_CA_ENV, "/tls/ca.crt"),
            (CLIENT_AUTH_ENV, "sometimes"),
        ]);
        let err = ServerTls::from_lookup(&bad_auth).unwrap_err().to_string();
        assert!(err.contains("expected `required` or `optional`"), "{err}");

        let missing = HashMap::from([
            (CERT_ENV, "/nonexistent/node.crt"),
            (KEY_ENV, "/nonexistent/node.key"),
        ]);
        let err = ServerTls::from_lookup(&missing).unwrap_err().to_string();
        assert!(
            err.starts_with("cannot read certificate /nonexistent/node.crt"),
            "{err}"
        );
    }
}
