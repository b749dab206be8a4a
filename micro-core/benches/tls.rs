//! TLS against plaintext in the same run: a unary call (a health check through micro's
//! registry-routed client) over an open connection, and a call on a new connection (a
//! fresh client each time: TCP connect + handshake + call), each with TLS 1.3 (ECDSA P-256
//! certificates) and in plaintext.
//!
//! `cargo bench -p micro-core --bench tls`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../tests/support/tls.rs"]
mod support;

use criterion::{Criterion, criterion_group, criterion_main};
use micro_core::{Client, tls::ClientTls, tls::ServerTls};
use support::{Ca, Usage, check, memory_registry, start};

fn calls(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("bench CA");
    let ca_file = ca.write(dir.path(), "ca.crt");
    let (cert, key) = ca
        .leaf(&["localhost", "127.0.0.1"], Usage::Server, 1)
        .write(dir.path(), "server");
    let registry = memory_registry();
    let client_tls = ClientTls::from_ca_file(&ca_file).unwrap();
    let (_plain, _secure) = runtime.block_on(async {
        let tls = ServerTls::from_files(&cert, &key).unwrap();
        (
            start("plain", &registry, None).await,
            start("secure", &registry, Some(tls)).await,
        )
    });
    let new_client = |tls: bool| {
        let builder = Client::builder().registry(registry.clone());
        let builder = if tls {
            builder.tls(client_tls.clone())
        } else {
            builder
        };
        builder.build().unwrap()
    };

    let mut group = c.benchmark_group("tls");
    for (name, service, tls) in [("plaintext", "plain", false), ("tls", "secure", true)] {
        let client = new_client(tls);
        runtime.block_on(check(&client, service)).unwrap();
        group.bench_function(format!("{name}/call"), |b| {
            b.iter(|| runtime.block_on(check(&client, service)).unwrap())
        });
        group.bench_function(format!("{name}/new_connection_call"), |b| {
            b.iter(|| {
                let client = new_client(tls);
                runtime.block_on(check(&client, service)).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, calls);
criterion_main!(benches);
