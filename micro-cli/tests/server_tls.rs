//! `micro server` with TLS as a real process:
//! - `--dev-tls`: the development CA and node certificate are made on first start (keys
//!   mode 0600) and reused on the next; the health check over TLS with the generated CA
//!   succeeds, a plaintext one fails;
//! - `MICRO_TLS_*`: mutual TLS configured by the environment alone.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::{os::unix::fs::PermissionsExt, path::Path, time::Duration};

use micro::{Client, tls::ClientTls};
use nix::sys::signal::Signal;
use support::{Proc, RegistryDir, server::MicroServer};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// What `micro server --dev-tls` printed: its address and its `tls` line's fields.
struct Started {
    server: Proc,
    addr: String,
    ca: String,
    cert: String,
    key: String,
    created: bool,
}

async fn start(data_dir: &Path, registry: &RegistryDir) -> Started {
    start_with(data_dir, registry, &["--dev-tls"], &[]).await
}

async fn start_with(
    data_dir: &Path,
    registry: &RegistryDir,
    flags: &[&str],
    env: &[(&str, &str)],
) -> Started {
    let started = MicroServer::builder()
        .data_dir(data_dir)
        .registry(registry)
        .args(flags)
        .env(env)
        .start()
        .await;
    Started {
        ca: started.tls_field("ca"),
        cert: started.tls_field("cert"),
        key: started.tls_field("key"),
        created: started.tls_field("created") == "true",
        addr: started.addr,
        server: started.process,
    }
}

fn mode(path: &str) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

async fn health(client: &Client) -> Result<ServingStatus, tonic::Status> {
    let response = HealthClient::new(client.channel("micro.server"))
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?;
    Ok(response.into_inner().status())
}

#[tokio::test]
async fn dev_tls_makes_certificates_once_and_serves_tls() {
    let data = tempfile::tempdir().unwrap();
    let registry = RegistryDir::new();
    let tls_dir = data.path().join("tls");

    let mut started = start(data.path(), &registry).await;
    assert!(
        !started.ca.is_empty(),
        "no `tls ca=… cert=… key=…` line before the ready line"
    );
    assert!(started.created);
    for path in [&started.ca, &started.cert, &started.key] {
        assert!(
            Path::new(path).starts_with(&tls_dir),
            "{path} not under {}",
            tls_dir.display()
        );
    }
    let ca_key = tls_dir.join("ca.key").display().to_string();
    assert_eq!(mode(&started.key), 0o600, "node key");
    assert_eq!(mode(&ca_key), 0o600, "CA key");
    assert_eq!(mode(&tls_dir.display().to_string()), 0o700, "tls directory");

    // Over TLS, trusting the generated CA, through the registry: SERVING.
    let client = Client::builder()
        .registry(registry.registry())
        .tls(ClientTls::from_ca_file(&started.ca).unwrap())
        .build()
        .unwrap();
    assert_eq!(health(&client).await.unwrap(), ServingStatus::Serving);

    // In plaintext, straight to the address: the server speaks only TLS.
    let plaintext = async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", started.addr))?
            .connect()
            .await?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await?;
        Ok::<_, Box<dyn std::error::Error>>(response)
    };
    let result = tokio::time::timeout(Duration::from_secs(30), plaintext)
        .await
        .expect("the plaintext call neither failed nor answered");
    assert!(result.is_err(), "a plaintext health check was answered");
    // A micro client without TLS is told what to configure.
    let plain_client = Client::builder()
        .registry(registry.registry())
        .build()
        .unwrap();
    let status = health(&plain_client).await.unwrap_err();
    assert!(status.message().contains("requires TLS"), "{status:?}");

    let ca = std::fs::read(&started.ca).unwrap();
    let cert = std::fs::read(&started.cert).unwrap();
    started.server.signal(Signal::SIGTERM);
    assert!(started.server.wait(EXIT_TIMEOUT).await.success());

    // The next start reuses them.
    let mut again = start(data.path(), &registry).await;
    assert!(!again.created);
    assert_eq!(std::fs::read(&again.ca).unwrap(), ca);
    assert_eq!(std::fs::read(&again.cert).unwrap(), cert);
    let client = Client::builder()
        .registry(registry.registry())
        .tls(ClientTls::from_ca_file(&again.ca).unwrap())
        .build()
        .unwrap();
    assert_eq!(health(&client).await.unwrap(), ServingStatus::Serving);
    again.server.signal(Signal::SIGTERM);
    assert!(again.server.wait(EXIT_TIMEOUT).await.success());

    // A lost node certificate is made again, signed by the CA clients already trust.
    std::fs::remove_file(&again.cert).unwrap();
    std::fs::remove_file(&again.key).unwrap();
    let mut renewed = start(data.path(), &registry).await;
    assert!(renewed.created);
    assert_eq!(std::fs::read(&renewed.ca).unwrap(), ca);
    assert_ne!(std::fs::read(&renewed.cert).unwrap(), cert);
    assert_eq!(mode(&renewed.key), 0o600, "node key");
    assert_eq!(health(&client).await.unwrap(), ServingStatus::Serving);
    renewed.server.signal(Signal::SIGTERM);
    assert!(renewed.server.wait(EXIT_TIMEOUT).await.success());
}

/// A CA, and a certificate and key it signed for `names`, written to `dir/<name>.*`.
fn issue(
    dir: &Path,
    ca: &rcgen::Issuer<'_, rcgen::KeyPair>,
    name: &str,
    names: &[&str],
) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, ca)
        .unwrap();
    let (cert_path, key_path) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (
        cert_path.display().to_string(),
        key_path.display().to_string(),
    )
}

#[tokio::test]
async fn mutual_tls_from_the_environment() {
    let data = tempfile::tempdir().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let registry = RegistryDir::new();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let ca_file = pki.path().join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let ca_file = ca_file.display().to_string();
    let (cert, key) = issue(pki.path(), &ca, "node", &["127.0.0.1"]);
    let (client_cert, client_key) = issue(pki.path(), &ca, "client", &["client.test"]);

    let mut started = start_with(
        data.path(),
        &registry,
        &[],
        &[
            ("MICRO_TLS_CERT", &cert),
            ("MICRO_TLS_KEY", &key),
            ("MICRO_TLS_CLIENT_CA", &ca_file),
            ("MICRO_TLS_CLIENT_AUTH", "required"),
        ],
    )
    .await;
    assert!(
        started.ca.is_empty(),
        "no development certificates without --dev-tls"
    );
    let record = micro::Registry::get_service(registry.registry().as_ref(), "micro.server")
        .await
        .unwrap();
    assert_eq!(
        record[0].nodes[0]
            .metadata
            .get("transport")
            .map(String::as_str),
        Some("tls")
    );

    let with_identity = Client::builder()
        .registry(registry.registry())
        .tls(
            ClientTls::builder()
                .ca(&ca_file)
                .identity(&client_cert, &client_key)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    assert_eq!(
        health(&with_identity).await.unwrap(),
        ServingStatus::Serving
    );

    let without = Client::builder()
        .registry(registry.registry())
        .tls(ClientTls::from_ca_file(&ca_file).unwrap())
        .build()
        .unwrap();
    let status = health(&without).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    started.server.signal(Signal::SIGTERM);
    assert!(started.server.wait(EXIT_TIMEOUT).await.success());
}

/// The `micro` client commands reach a `--dev-tls` server's TLS nodes with `MICRO_TLS_CA`,
/// and without it fail with exit 3 and a message saying what to configure.
#[tokio::test]
async fn cli_commands_dial_tls_nodes_with_micro_tls_ca() {
    let server = MicroServer::builder()
        .args(&["--dev-tls"])
        .api()
        .start()
        .await;
    let ca = server.tls_field("ca");
    let with_ca = [("MICRO_TLS_CA", ca.as_str())];

    let (code, _, stderr) = server.micro(&["kv", "put", "k", "v"], &[], None).await;
    assert_eq!(code, 3, "no CA: unreachable; stderr: {stderr}");
    assert!(
        stderr.contains("requires TLS") && stderr.contains("MICRO_TLS_CA"),
        "says what to configure: {stderr}"
    );

    let (code, _, stderr) = server.micro(&["kv", "put", "k", "v"], &with_ca, None).await;
    assert_eq!(code, 0, "kv put over TLS: {stderr}");
    let (code, stdout, stderr) = server.micro(&["kv", "get", "k"], &with_ca, None).await;
    assert_eq!((code, stdout.trim()), (0, "v"), "kv get over TLS: {stderr}");
    let (code, stdout, stderr) = server
        .micro(
            &[
                "call",
                "micro.kv",
                "Kv.Get",
                r#"{"namespace":{"database":"micro","table":"default"},"key":"k"}"#,
            ],
            &with_ca,
            None,
        )
        .await;
    assert_eq!(code, 0, "call over TLS: {stderr}");
    assert!(
        stdout.contains(r#""key": "k""#) || stdout.contains(r#""key":"k""#),
        "{stdout}"
    );
    let (code, stdout, stderr) = server.micro(&["health", "micro.kv"], &with_ca, None).await;
    assert_eq!(code, 0, "health over TLS: {stderr}");
    assert!(stdout.contains("SERVING"), "{stdout}");
    let (code, _, stderr) = server
        .micro(&["config", "set", "db.pool", "5"], &with_ca, None)
        .await;
    assert_eq!(code, 0, "config set over TLS: {stderr}");
    let secret = server.admin_secret();
    let (code, stdout, stderr) = server
        .micro(
            &["auth", "token", "--id", "admin", "--secret", &secret],
            &with_ca,
            None,
        )
        .await;
    assert_eq!(code, 0, "auth token over TLS: {stderr}");
    assert_eq!(stdout.trim().split('.').count(), 3, "a JWT: {stdout}");

    server.stop().await;
}
