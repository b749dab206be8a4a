use std::{io, path::PathBuf};

/// An error loading TLS certificates and keys, or configuring TLS.
///
/// Every variant names the file or variable at fault and says what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file cannot be read: missing, unreadable, a directory.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// What the file should hold: `certificate`, `private key`, `CA certificate`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },

    /// A file holds no PEM block of the expected kind.
    #[error("{what} {path}: {reason}")]
    NotPem {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What was found instead.
        reason: String,
    },

    /// A key file holds no private key, or one the crypto provider cannot use.
    #[error("private key {path}: {reason}")]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The private key is not the one the certificate was issued for.
    #[error("private key {key} does not match certificate {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },

    /// A certificate cannot be used: not X.509, or refused as a trust anchor.
    #[error("{what} {path}: {reason}")]
    Certificate {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A client was configured without any certificate authority to trust.
    #[error("no trusted CA certificate: add one with ClientTlsBuilder::ca (or set MICRO_TLS_CA)")]
    NoTrustedCa,

    /// The server name to verify is not a DNS name or IP address.
    #[error("invalid TLS server name {name:?}: {reason}")]
    ServerName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An environment variable holds a value that cannot be used, or one is set without
    /// another it needs.
    #[error("invalid {var}={value:?}: {reason}")]
    InvalidEnv {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },

    /// rustls refused the configuration.
    #[cfg(feature = "tls")]
    #[error("TLS configuration failed: {0}")]
    Config(#[source] rustls::Error),

    /// A `MICRO_TLS_*` variable is set, but this build has no TLS (cargo feature `tls`).
    #[error(
        "{var} is set, but this build of micro has no TLS: enable the \"tls\" feature of micro \
         (micro = {{ features = [\"tls\"] }}), or unset {var}"
    )]
    NotCompiled {
        /// The variable that asks for TLS.
        var: &'static str,
    },
}
