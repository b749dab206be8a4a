//! `micro server --dev-tls`: a development CA and a node certificate for this machine,
//! made on first start under `<data-dir>/tls/` and reused afterwards.
//!
//! For development only: the CA's key sits next to the certificates, so anyone who can
//! read the data directory can issue certificates this CA vouches for. Never in
//! production; there, give services certificates from a real CA (`MICRO_TLS_CERT`, ...).

use std::{
    fs,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use micro_core::tls::{ClientTls, ServerTls};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The names the node certificate is valid for.
const NODE_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
/// How long the certificates are valid, in years from the start of the current year.
const VALID_YEARS: i32 = 10;

/// The development certificates' files.
#[derive(Debug)]
pub(crate) struct DevTls {
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    /// Whether this start made them.
    pub(crate) created: bool,
}

impl DevTls {
    /// The files under `<data_dir>/tls/`, made if missing: `ca.crt` and `ca.key` (the
    /// development CA), `node.crt` and `node.key` (this machine's certificate, signed by
    /// the CA). Keys are mode 0600, the directory 0700.
    pub(crate) fn ensure(data_dir: &Path) -> Result<Self, BoxError> {
        let dir = data_dir.join("tls");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|err| format!("--dev-tls: cannot create {}: {err}", dir.display()))?;
        let files = Self {
            ca: dir.join("ca.crt"),
            cert: dir.join("node.crt"),
            key: dir.join("node.key"),
            created: false,
        };
        let ca_key = dir.join("ca.key");
        if [&files.ca, &ca_key, &files.cert, &files.key]
            .iter()
            .all(|path| path.exists())
        {
            return Ok(files);
        }
        // A CA kept from an earlier start signs the new node certificate: clients that
        // trust it keep working. Its subject and key identifier come from the same
        // parameters and key, so the issuer is rebuilt without parsing the certificate.
        let (ca_params, ca_key_pair) = if files.ca.exists() && ca_key.exists() {
            let key = KeyPair::from_pem(&read(&ca_key)?)
                .map_err(|err| format!("--dev-tls: {}: {err}", ca_key.display()))?;
            (ca_params()?, key)
        } else {
            let key = KeyPair::generate()?;
            let params = ca_params()?;
            let cert = params.self_signed(&key)?;
            write(&files.ca, cert.pem().as_bytes(), 0o644)?;
            write(&ca_key, key.serialize_pem().as_bytes(), 0o600)?;
            (params, key)
        };
        let issuer = Issuer::new(ca_params, ca_key_pair);
        let node_key = KeyPair::generate()?;
        let node = node_params()?.signed_by(&node_key, &issuer)?;
        write(&files.cert, node.pem().as_bytes(), 0o644)?;
        write(&files.key, node_key.serialize_pem().as_bytes(), 0o600)?;
        Ok(Self {
            created: true,
            ..files
        })
    }

    /// The server side: the node certificate and key.
    pub(crate) fn server(&self) -> Result<ServerTls, BoxError> {
        Ok(ServerTls::from_files(&self.cert, &self.key)?)
    }

    /// The client side: trusting the development CA.
    pub(crate) fn client(&self) -> Result<ClientTls, BoxError> {
        Ok(ClientTls::from_ca_file(&self.ca)?)
    }
}

fn ca_params() -> Result<CertificateParams, BoxError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name.push(
        DnType::CommonName,
        "micro development CA (not for production)",
    );
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params);
    Ok(params)
}

fn node_params() -> Result<CertificateParams, BoxError> {
    let names: Vec<String> = NODE_NAMES.iter().map(|name| (*name).to_owned()).collect();
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "micro development node");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    validity(&mut params);
    Ok(params)
}

/// From the start of last year (clocks that are a little behind) for [`VALID_YEARS`].
fn validity(params: &mut CertificateParams) {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    // 365.2425 days a year: exact enough to name the current year.
    let year = 1970 + i32::try_from(seconds / 31_556_952).unwrap_or(0);
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + VALID_YEARS, 1, 1);
}

fn read(path: &Path) -> Result<String, BoxError> {
    fs::read_to_string(path)
        .map_err(|err| format!("--dev-tls: cannot read {}: {err}", path.display()).into())
}

/// Writes `contents` to `path` with `mode`, through a temporary file renamed into place.
fn write(path: &Path, contents: &[u8], mode: u32) -> Result<(), BoxError> {
    let temporary = path.with_extension("tmp");
    let result = (|| {
        let _ = fs::remove_file(&temporary);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temporary)?;
        // The mode given at creation is filtered by the umask; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    result.map_err(|err| format!("--dev-tls: cannot write {}: {err}", path.display()).into())
}
