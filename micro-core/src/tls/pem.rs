//! Reading PEM files into rustls types, with errors that name the file and the problem.

use std::path::Path;

use rustls::{
    Error as RustlsError, InconsistentKeys, RootCertStore, crypto::CryptoProvider,
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use super::TlsError;

/// A file's path and contents.
pub(super) type PemFile<'a> = (&'a Path, &'a [u8]);

pub(super) const CERTIFICATE: &str = "certificate";
pub(super) const PRIVATE_KEY: &str = "private key";
pub(super) const CA_CERTIFICATE: &str = "CA certificate";

/// A file's contents, or [`TlsError::Read`] naming it.
pub(super) fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Every `CERTIFICATE` block of a PEM file, in order; at least one.
pub(super) fn certificates(
    what: &'static str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let not_pem = |reason: String| TlsError::NotPem {
        what,
        path: path.to_owned(),
        reason,
    };
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| not_pem(format!("malformed PEM: {err}")))?;
    if certificates.is_empty() {
        return Err(not_pem(missing_block(pem, "CERTIFICATE")));
    }
    Ok(certificates)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub(super) fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|err| TlsError::Key {
        path: path.to_owned(),
        reason: match err {
            rustls_pki_types::pem::Error::NoItemsFound => missing_block(pem, "PRIVATE KEY"),
            other => format!("malformed PEM: {other}"),
        },
    })
}

/// A certificate chain and the private key for its first certificate, checked to belong
/// together.
pub(super) fn certified_key(
    provider: &CryptoProvider,
    (cert_path, cert_pem): PemFile<'_>,
    (key_path, key_pem): PemFile<'_>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = certificates(CERTIFICATE, cert_path, cert_pem)?;
    let key = private_key(key_path, key_pem)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|err| TlsError::Key {
            path: key_path.to_owned(),
            reason: format!("unusable key: {err}"),
        })?;
    match CertifiedKey::new(chain.clone(), signing_key).keys_match() {
        Ok(()) | Err(RustlsError::InconsistentKeys(InconsistentKeys::Unknown)) => Ok((chain, key)),
        Err(RustlsError::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(TlsError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            })
        }
        Err(err) => Err(TlsError::Certificate {
            what: CERTIFICATE,
            path: cert_path.to_owned(),
            reason: err.to_string(),
        }),
    }
}

/// Adds every certificate of a CA file to `roots`.
pub(super) fn add_roots(
    roots: &mut RootCertStore,
    path: &Path,
    pem: &[u8],
) -> Result<(), TlsError> {
    for certificate in certificates(CA_CERTIFICATE, path, pem)? {
        roots
            .add(certificate)
            .map_err(|err| TlsError::Certificate {
                what: CA_CERTIFICATE,
                path: path.to_owned(),
                reason: format!("not usable as a trust anchor: {err}"),
            })?;
    }
    Ok(())
}

/// Says what a file holds instead of a `label` block.
fn missing_block(pem: &[u8], label: &str) -> String {
    let text = String::from_utf8_lossy(pem);
    let expected = if label == "PRIVATE KEY" {
        "a PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block"
    } else {
        "a CERTIFICATE block"
    };
    if !text.contains("-----BEGIN ") {
        return format!("not PEM: expected {expected}");
    }
    let found: Vec<&str> = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("-----BEGIN "))
        .map(|rest| rest.trim_end_matches('-'))
        .collect();
    format!(
        "no {label} found (expected {expected}; the file holds {})",
        found.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_what_a_file_holds_instead() {
        let path = Path::new("/etc/tls/node.crt");
        let err = certificates(CERTIFICATE, path, b"hello").unwrap_err();
        assert_eq!(
            err.to_string(),
            "certificate /etc/tls/node.crt: not PEM: expected a CERTIFICATE block"
        );
        let key_only = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        let err = certificates(CERTIFICATE, path, key_only).unwrap_err();
        assert!(
            err.to_string().contains("the file holds PRIVATE KEY"),
            "{err}"
        );
        let err = private_key(Path::new("/k.pem"), b"").unwrap_err();
        assert!(
            err.to_string().starts_with("private key /k.pem: not PEM"),
            "{err}"
        );
    }
}
