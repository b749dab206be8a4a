//! Test PKI made with rcgen in a temporary directory, and a micro `Service` over it whose
//! calls are counted before any handler runs.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use micro_core::{
    Client, Service,
    client::RequestExt,
    middleware::interceptor_fn,
    registry::{MemoryRegistry, SharedRegistry},
    service::RunningService,
    tls::ServerTls,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use tonic::Status;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// A certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its private key.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

/// What a leaf is for.
#[derive(Clone, Copy)]
pub enum Usage {
    Server,
    Client,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Writes the CA certificate to `dir/<file>`.
    pub fn write(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, self.pem()).unwrap();
        path
    }

    /// A leaf valid now for `names` (DNS names or IP addresses).
    pub fn leaf(&self, names: &[&str], usage: Usage, serial: u64) -> Leaf {
        self.leaf_with(names, usage, serial, |_| {})
    }

    /// A leaf that expired a year ago.
    pub fn expired_leaf(&self, names: &[&str], usage: Usage, serial: u64) -> Leaf {
        self.leaf_with(names, usage, serial, |params| {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        })
    }

    fn leaf_with(
        &self,
        names: &[&str],
        usage: Usage,
        serial: u64,
        adjust: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("micro test leaf {serial}"));
        params.serial_number = Some(SerialNumber::from(serial));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        adjust(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

impl Leaf {
    /// Writes `dir/<name>.crt` and `dir/<name>.key`.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }

    /// Replaces `cert` and `key` the way a certificate manager does: each written to a
    /// temporary file, then renamed into place.
    pub fn replace(&self, cert: &Path, key: &Path) {
        for (path, contents) in [(cert, &self.cert_pem), (key, &self.key_pem)] {
            let temporary = path.with_extension("new");
            std::fs::write(&temporary, contents).unwrap();
            std::fs::rename(&temporary, path).unwrap();
        }
    }
}

/// A running service whose requests are counted before any handler runs: health checks
/// (`calls`, with the remote address each came from) and all requests (`requests`, which
/// include the health watch micro's client opens on each connection).
pub struct Node {
    pub running: RunningService,
    pub calls: Arc<AtomicU64>,
    pub requests: Arc<AtomicU64>,
    pub remotes: Arc<Mutex<Vec<Option<SocketAddr>>>>,
}

impl Node {
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn id(&self) -> &str {
        self.running.node_id()
    }

    pub fn address(&self) -> &str {
        self.running.advertised_address()
    }
}

pub fn memory_registry() -> SharedRegistry {
    Arc::new(MemoryRegistry::new())
}

/// Starts service `name` on 127.0.0.1, with TLS when `tls` is given.
pub async fn start(name: &str, registry: &SharedRegistry, tls: Option<ServerTls>) -> Node {
    let calls = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let remotes = Arc::new(Mutex::new(Vec::new()));
    let counter = interceptor_fn({
        let (calls, requests, remotes) = (calls.clone(), requests.clone(), remotes.clone());
        move |request: http::Request<tonic::body::Body>| {
            requests.fetch_add(1, Ordering::SeqCst);
            if request.uri().path() == "/grpc.health.v1.Health/Check" {
                calls.fetch_add(1, Ordering::SeqCst);
                let remote = request
                    .extensions()
                    .get::<tonic::transport::server::TcpConnectInfo>()
                    .and_then(|info| info.remote_addr());
                remotes.lock().unwrap().push(remote);
            }
            async move { Ok::<_, Status>(request) }
        }
    });
    let mut builder = Service::builder(name)
        .address("127.0.0.1:0")
        .registry(registry.clone())
        .layer(counter);
    if let Some(tls) = tls {
        builder = builder.tls(tls);
    }
    let running = builder.build().unwrap().start().await.unwrap();
    Node {
        running,
        calls,
        requests,
        remotes,
    }
}

/// One health check of service `name` through `client`; the node that answered.
pub async fn check(client: &Client, name: &str) -> Result<String, Status> {
    check_with(client, name, micro_core::client::CallOptions::new()).await
}

/// [`check`] with call options (a node filter, ...).
pub async fn check_with(
    client: &Client,
    name: &str,
    options: micro_core::client::CallOptions,
) -> Result<String, Status> {
    let mut health = HealthClient::new(client.channel(name));
    let request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    })
    .with_call_options(options);
    let response = health.check(request).await?;
    let node = response
        .extensions()
        .get::<micro_core::NodeInfo>()
        .map(|info| info.id().to_owned())
        .unwrap_or_default();
    Ok(node)
}

/// The leaf certificate a TLS server at `address` presents to a new connection verified
/// against `ca_pem` for `localhost`.
pub async fn presented(address: &str, ca_pem: &str) -> CertificateDer<'static> {
    use rustls_pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}
