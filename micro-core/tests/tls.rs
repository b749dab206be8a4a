//! TLS and mutual TLS over real sockets on 127.0.0.1: micro's `Service` with `ServerTls`,
//! micro's registry-routed `Client` with `ClientTls`, certificates made with rcgen.
//!
//! - the mTLS matrix (acceptance 5): a valid client certificate is accepted; none, an
//!   expired one and one from another CA are refused before any handler runs; a server
//!   certificate for the wrong name or from an untrusted CA is refused by the client;
//! - registry routing: TLS and plaintext nodes of one service, with and without ClientTls;
//! - file errors name the file; a bad file on reload keeps the certificate in use;
//! - a silent client cannot hold up other handshakes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/tls.rs"]
mod support;

use std::time::Duration;

use micro_core::{
    Client,
    client::CallOptions,
    selector::{NodeFilter, RoundRobin},
    tls::{ClientAuth, ClientTls, ServerTls, TlsError},
};
use support::{Ca, Usage, check, check_with, memory_registry, presented, start};
use tokio::io::AsyncReadExt;
use tonic::Code;

const SERVICE: &str = "tls-test";

/// A client on `registry` trusting `ca`, with an optional client identity.
fn tls_client(
    registry: &micro_core::registry::SharedRegistry,
    tls: micro_core::tls::ClientTlsBuilder,
) -> Client {
    Client::builder()
        .registry(registry.clone())
        .tls(tls.build().unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn mutual_tls_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let other_ca = Ca::new("another CA");
    let server_ca_file = server_ca.write(dir.path(), "server-ca.crt");
    let client_ca_file = client_ca.write(dir.path(), "client-ca.crt");

    let (cert, key) = server_ca
        .leaf(&["localhost", "127.0.0.1"], Usage::Server, 1)
        .write(dir.path(), "server");
    let server_tls = ServerTls::builder(&cert, &key)
        .client_ca(&client_ca_file, ClientAuth::Required)
        .build()
        .unwrap();
    assert_eq!(server_tls.client_auth(), Some(ClientAuth::Required));
    let registry = memory_registry();
    let node = start(SERVICE, &registry, Some(server_tls)).await;
    assert_eq!(
        node.running.record().nodes[0].metadata.get("transport"),
        Some(&"tls".to_owned()),
        "the registry record says the node needs TLS"
    );

    // A valid client certificate: the call goes through, and the handler sees the caller's
    // address as over plaintext.
    let (valid_cert, valid_key) = client_ca
        .leaf(&["client.test"], Usage::Client, 10)
        .write(dir.path(), "client");
    let client = tls_client(
        &registry,
        ClientTls::builder()
            .ca(&server_ca_file)
            .identity(&valid_cert, &valid_key),
    );
    assert_eq!(check(&client, SERVICE).await.unwrap(), node.id());
    assert_eq!(node.calls(), 1);
    let remote = node.remotes.lock().unwrap()[0].expect("remote address in the request");
    assert!(remote.ip().is_loopback(), "{remote}");

    // Refused clients: no certificate, an expired one, one from another CA. Each fails with
    // UNAVAILABLE naming the node, and nothing reaches the server's stack. (The server's
    // alert, `CertificateRequired`, `CertificateExpired` or `UnknownCA`, is in the message
    // when it arrived before the connection closed; with TLS 1.3 that is a race, so it is
    // not asserted.)
    let (expired_cert, expired_key) = client_ca
        .expired_leaf(&["client.test"], Usage::Client, 11)
        .write(dir.path(), "expired");
    let (foreign_cert, foreign_key) = other_ca
        .leaf(&["client.test"], Usage::Client, 12)
        .write(dir.path(), "foreign");
    let refused = [
        (
            "CertificateRequired",
            ClientTls::builder().ca(&server_ca_file),
        ),
        (
            "CertificateExpired",
            ClientTls::builder()
                .ca(&server_ca_file)
                .identity(&expired_cert, &expired_key),
        ),
        (
            "UnknownCA",
            ClientTls::builder()
                .ca(&server_ca_file)
                .identity(&foreign_cert, &foreign_key),
        ),
    ];
    let requests = node.requests();
    for (case, tls) in refused {
        let client = tls_client(&registry, tls);
        let status = check(&client, SERVICE).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{case}: {status:?}");
        assert!(
            status.message().contains(node.address()),
            "{case}: {status:?}"
        );
        assert_eq!(
            node.requests(),
            requests,
            "{case}: a request reached the server"
        );
    }

    // The valid client still gets through on a fresh connection.
    let client = tls_client(
        &registry,
        ClientTls::builder()
            .ca(&server_ca_file)
            .identity(&valid_cert, &valid_key),
    );
    check(&client, SERVICE).await.unwrap();
    assert_eq!(node.calls(), 2);
}

#[tokio::test]
async fn the_client_refuses_a_wrong_name_or_an_untrusted_server() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server CA");
    let untrusted = Ca::new("untrusted CA");
    let ca_file = ca.write(dir.path(), "ca.crt");

    // The certificate is for other.example; the client expects localhost.
    let registry = memory_registry();
    let (cert, key) = ca
        .leaf(&["other.example"], Usage::Server, 1)
        .write(dir.path(), "other");
    let node = start(
        "wrong-name",
        &registry,
        Some(ServerTls::from_files(&cert, &key).unwrap()),
    )
    .await;
    let client = tls_client(
        &registry,
        ClientTls::builder().ca(&ca_file).server_name("localhost"),
    );
    let status = check(&client, "wrong-name").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("not valid for name"),
        "{status:?}"
    );
    assert_eq!(node.requests(), 0);

    // A certificate for the right name from a CA the client does not trust.
    let (cert, key) = untrusted
        .leaf(&["localhost", "127.0.0.1"], Usage::Server, 2)
        .write(dir.path(), "untrusted");
    let node = start(
        "untrusted",
        &registry,
        Some(ServerTls::from_files(&cert, &key).unwrap()),
    )
    .await;
    let client = tls_client(&registry, ClientTls::builder().ca(&ca_file));
    let status = check(&client, "untrusted").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("invalid peer certificate"),
        "{status:?}"
    );
    assert_eq!(node.requests(), 0);
}

#[tokio::test]
async fn registry_routes_tls_and_plaintext_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("server CA");
    let ca_file = ca.write(dir.path(), "ca.crt");
    let (cert, key) = ca
        .leaf(&["localhost", "127.0.0.1"], Usage::Server, 1)
        .write(dir.path(), "server");
    let registry = memory_registry();
    let secure = start(
        SERVICE,
        &registry,
        Some(ServerTls::from_files(&cert, &key).unwrap()),
    )
    .await;
    let plain = start(SERVICE, &registry, None).await;
    assert!(
        !plain.running.record().nodes[0]
            .metadata
            .contains_key("transport")
    );

    // With ClientTls: both nodes answer, each dialed its own way.
    let client = Client::builder()
        .registry(registry.clone())
        .selector(RoundRobin::new())
        .tls(ClientTls::from_ca_file(&ca_file).unwrap())
        .build()
        .unwrap();
    let mut answered = Vec::new();
    for _ in 0..6 {
        answered.push(check(&client, SERVICE).await.unwrap());
    }
    for node in [&secure, &plain] {
        assert!(
            answered.iter().any(|id| id == node.id()),
            "{} never answered: {answered:?}",
            node.id()
        );
    }

    // Without: the TLS node is refused with an error that says what to configure...
    let client = Client::builder()
        .registry(registry.clone())
        .build()
        .unwrap();
    let only_tls = CallOptions::new().filter(NodeFilter::label("transport", "tls"));
    let status = check_with(&client, SERVICE, only_tls).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    for expected in [
        secure.id(),
        "requires TLS",
        "ClientBuilder::tls",
        "MICRO_TLS_CA",
    ] {
        assert!(
            status.message().contains(expected),
            "{expected}: {status:?}"
        );
    }
    // ...and calls that may go anywhere are served by the plaintext node.
    let secure_requests = secure.requests();
    for _ in 0..4 {
        assert_eq!(check(&client, SERVICE).await.unwrap(), plain.id());
    }
    assert_eq!(secure.requests(), secure_requests);
}

#[tokio::test]
async fn file_errors_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("CA");
    let (cert, key) = ca
        .leaf(&["localhost"], Usage::Server, 1)
        .write(dir.path(), "a");
    let (_, other_key) = ca
        .leaf(&["localhost"], Usage::Server, 2)
        .write(dir.path(), "b");
    let missing = dir.path().join("missing.crt");
    let garbage = dir.path().join("garbage.crt");
    std::fs::write(&garbage, "this is not a certificate").unwrap();

    let err = ServerTls::from_files(&missing, &key).unwrap_err();
    assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot read certificate {}", missing.display())),
        "{err}"
    );

    let err = ServerTls::from_files(&garbage, &key).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "certificate {}: not PEM: expected a CERTIFICATE block",
            garbage.display()
        )
    );

    // The certificate where the key should be.
    let err = ServerTls::from_files(&cert, &cert).unwrap_err();
    assert!(matches!(err, TlsError::Key { .. }), "{err:?}");
    assert!(
        err.to_string().contains("no PRIVATE KEY found") && err.to_string().contains("CERTIFICATE"),
        "{err}"
    );

    let err = ServerTls::from_files(&cert, &other_key).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "private key {} does not match certificate {}",
            other_key.display(),
            cert.display()
        )
    );

    let err = ClientTls::builder()
        .ca(&garbage)
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("CA certificate "), "{err}");
    let err = ClientTls::builder()
        .ca(dir.path().join("ca.crt"))
        .identity(&cert, &other_key)
        .build()
        .unwrap_err();
    assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
}

#[tokio::test]
async fn a_bad_file_keeps_the_certificate_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("CA");
    let first = ca.leaf(&["localhost", "127.0.0.1"], Usage::Server, 1);
    let (cert, key) = first.write(dir.path(), "server");
    let tls = ServerTls::builder(&cert, &key)
        .reload_interval(Duration::ZERO)
        .build()
        .unwrap();
    let registry = memory_registry();
    let node = start(SERVICE, &registry, Some(tls.clone())).await;

    // A half-written certificate: refused, the old one stays.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nMIIB").unwrap();
    let err = tls.reload().unwrap_err();
    assert!(
        err.to_string().contains(&cert.display().to_string()),
        "{err}"
    );
    // A new certificate whose key is not there yet: refused too.
    let second = ca.leaf(&["localhost", "127.0.0.1"], Usage::Server, 2);
    std::fs::write(&cert, &second.cert_pem).unwrap();
    assert!(matches!(tls.reload(), Err(TlsError::KeyMismatch { .. })));
    assert_eq!(tls.generation(), 0);
    assert_eq!(presented(node.address(), &ca.pem()).await, first.der);

    // Both in place: swapped.
    std::fs::write(&key, &second.key_pem).unwrap();
    tls.reload().unwrap();
    assert_eq!(tls.generation(), 1);
    assert_eq!(presented(node.address(), &ca.pem()).await, second.der);
}

#[tokio::test]
async fn a_silent_client_does_not_hold_up_others() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("CA");
    let ca_file = ca.write(dir.path(), "ca.crt");
    let (cert, key) = ca
        .leaf(&["localhost", "127.0.0.1"], Usage::Server, 1)
        .write(dir.path(), "server");
    let tls = ServerTls::builder(&cert, &key)
        .handshake_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let registry = memory_registry();
    let node = start(SERVICE, &registry, Some(tls)).await;

    // Connected, never says a word.
    let mut silent = tokio::net::TcpStream::connect(node.address())
        .await
        .unwrap();
    let client = tls_client(&registry, ClientTls::builder().ca(&ca_file));
    for _ in 0..3 {
        check(&client, SERVICE).await.unwrap();
    }
    // The server gives up on it after the handshake timeout and closes the connection.
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(30), silent.read(&mut buf))
        .await
        .expect("the silent connection was never closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn the_client_identity_reloads_too() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let other_ca = Ca::new("another CA");
    let server_ca_file = server_ca.write(dir.path(), "server-ca.crt");
    let client_ca_file = client_ca.write(dir.path(), "client-ca.crt");
    let (cert, key) = server_ca
        .leaf(&["localhost", "127.0.0.1"], Usage::Server, 1)
        .write(dir.path(), "server");
    let server_tls = ServerTls::builder(&cert, &key)
        .client_ca(&client_ca_file, ClientAuth::Required)
        .build()
        .unwrap();
    let registry = memory_registry();
    let node = start(SERVICE, &registry, Some(server_tls)).await;

    // The client starts with a certificate the server does not accept...
    let (client_cert, client_key) = other_ca
        .leaf(&["client.test"], Usage::Client, 10)
        .write(dir.path(), "client");
    let client_tls = ClientTls::builder()
        .ca(&server_ca_file)
        .identity(&client_cert, &client_key)
        .reload_interval(Duration::ZERO)
        .build()
        .unwrap();
    let client = |tls: &ClientTls| {
        Client::builder()
            .registry(registry.clone())
            .tls(tls.clone())
            .build()
            .unwrap()
    };
    let status = check(&client(&client_tls), SERVICE).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(node.requests(), 0);

    // ...and is given a good one on disk: connections after the reload present it.
    client_ca
        .leaf(&["client.test"], Usage::Client, 11)
        .replace(&client_cert, &client_key);
    client_tls.reload().unwrap();
    assert_eq!(client_tls.generation(), 1);
    assert_eq!(
        check(&client(&client_tls), SERVICE).await.unwrap(),
        node.id()
    );
}

#[tokio::test]
async fn optional_client_auth_lets_anonymous_clients_in_but_not_bad_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let other_ca = Ca::new("another CA");
    let server_ca_file = server_ca.write(dir.path(), "server-ca.crt");
    let client_ca_file = client_ca.write(dir.path(), "client-ca.crt");
    let (cert, key) = server_ca
        .leaf(&["localhost", "127.0.0.1"], Usage::Server, 1)
        .write(dir.path(), "server");
    let server_tls = ServerTls::builder(&cert, &key)
        .client_ca(&client_ca_file, ClientAuth::Optional)
        .build()
        .unwrap();
    assert_eq!(server_tls.client_auth(), Some(ClientAuth::Optional));
    let registry = memory_registry();
    let node = start(SERVICE, &registry, Some(server_tls)).await;

    let anonymous = tls_client(&registry, ClientTls::builder().ca(&server_ca_file));
    assert_eq!(check(&anonymous, SERVICE).await.unwrap(), node.id());

    let (valid_cert, valid_key) = client_ca
        .leaf(&["client.test"], Usage::Client, 10)
        .write(dir.path(), "valid");
    let valid = tls_client(
        &registry,
        ClientTls::builder()
            .ca(&server_ca_file)
            .identity(&valid_cert, &valid_key),
    );
    assert_eq!(check(&valid, SERVICE).await.unwrap(), node.id());

    let (foreign_cert, foreign_key) = other_ca
        .leaf(&["client.test"], Usage::Client, 11)
        .write(dir.path(), "foreign");
    let foreign = tls_client(
        &registry,
        ClientTls::builder()
            .ca(&server_ca_file)
            .identity(&foreign_cert, &foreign_key),
    );
    let requests = node.requests();
    let status = check(&foreign, SERVICE).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(node.requests(), requests);
    assert_eq!(node.calls(), 2);
}

#[tokio::test]
async fn tls_on_a_unix_socket_is_refused_at_build() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("CA");
    let (cert, key) = ca
        .leaf(&["localhost"], Usage::Server, 1)
        .write(dir.path(), "server");
    let socket = format!("unix:{}", dir.path().join("greeter.sock").display());
    let err = micro_core::Service::builder(SERVICE)
        .address(&socket)
        .registry(memory_registry())
        .tls(ServerTls::from_files(&cert, &key).unwrap())
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains(&socket) && err.to_string().contains("TCP addresses only"),
        "{err}"
    );
}
