//! Greeter throughput with auth on against auth off, same server thread, same run.
//!
//! - off: SayHello through micro's client to a greeter without an auth layer;
//! - on: the same greeter behind an `AuthLayer` (bearer token verified with a cached
//!   EdDSA key, one rule granting scope `greeter`), the client adding its token with
//!   `Credentials` (an `IssuerSource` minting and refreshing it).
//!
//! Prints rps, p50/p99 and CPU time per call for both and the on/off ratios, at 1 and 64
//! concurrent calls.
//!
//! ```text
//! cargo bench --bench auth_load                 # 5 s per measurement
//! MICRO_BENCH_SECS=10 cargo bench --bench auth_load
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::{sync::Arc, time::Duration};

use micro::{Client, registry::MemoryRegistry};
// micro-core's auth directly: the root package's own `auth` feature is not on for its benches.
use micro_core::auth::{
    Access, Account, AccountKind, Algorithm, AuthLayer, Credentials, Issuer, KeySet, Resource,
    Rule, RuleSet, SigningKey, Verifier,
};

#[path = "support/greeter.rs"]
mod greeter;
#[path = "support/measure.rs"]
mod measure;

use greeter::pb;
use measure::{Figures, average, count_threads, measure, this_thread};
use pb::greeter_client::GreeterClient;

const ISSUER: &str = "micro-bench";
const AUDIENCE: &str = "micro";

fn main() {
    let secs: u64 = std::env::var("MICRO_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let duration = Duration::from_secs(secs);

    let key = SigningKey::generate(Algorithm::EdDSA, "bench-1").unwrap();
    let mut keys = KeySet::new();
    keys.insert_signing(&key).unwrap();
    let verifier = Arc::new(Verifier::new(keys, ISSUER, AUDIENCE));
    let rules = RuleSet::new([Rule {
        id: "greeter".into(),
        scope: "greeter".into(),
        resource: Resource::service("greeter-auth", "Greeter.*"),
        access: Access::Grant,
        priority: 0,
    }])
    .unwrap();
    let auth = AuthLayer::new("greeter-auth", verifier, rules);

    let registry: micro::registry::SharedRegistry = Arc::new(MemoryRegistry::new());
    let (_, server_tid) = greeter::serve_on_thread(
        registry.clone(),
        vec![("greeter", None), ("greeter-auth", Some(auth))],
    );
    count_threads([this_thread(), (this_thread().0, server_tid)]);

    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    client_rt.block_on(async move {
        let client = Client::builder().registry(registry).build().unwrap();
        let off = GreeterClient::new(client.channel("greeter"));
        let account = Account {
            id: "bench".into(),
            kind: AccountKind::Service,
            scopes: vec!["greeter".into()],
            ..Account::default()
        };
        let credentials = Credentials::issuer(Issuer::new(ISSUER, AUDIENCE, key), account);
        let on = GreeterClient::new(
            tower::ServiceBuilder::new()
                .layer(credentials)
                .service(client.channel("greeter-auth")),
        );

        // Warm both paths up (connections, the token cache).
        measure(off.clone(), 8, Duration::from_millis(500)).await;
        measure(on.clone(), 8, Duration::from_millis(500)).await;

        println!(
            "SayHello, {secs} s per measurement; off = no auth, on = AuthLayer (EdDSA, cached) + Credentials"
        );
        println!(
            "{:>11} | {:>10} {:>9} {:>9} {:>9} | {:>10} {:>9} {:>9} {:>9} | {:>9} {:>11} {:>11}",
            "concurrency",
            "off rps",
            "off p50",
            "off p99",
            "off cpu",
            "on rps",
            "on p50",
            "on p99",
            "on cpu",
            "rps ratio",
            "added p50",
            "added cpu"
        );
        for concurrency in [1, 64] {
            // Alternate so drift in the machine's load hits both alike.
            let off_a = measure(off.clone(), concurrency, duration / 2).await;
            let on_a = measure(on.clone(), concurrency, duration / 2).await;
            let on_b = measure(on.clone(), concurrency, duration / 2).await;
            let off_b = measure(off.clone(), concurrency, duration / 2).await;
            let (off, on): (Figures, Figures) = (average(off_a, off_b), average(on_a, on_b));
            println!(
                "{:>11} | {:>10.0} {:>9.1?} {:>9.1?} {:>9.1?} | {:>10.0} {:>9.1?} {:>9.1?} {:>9.1?} | {:>9.3} {:>11.1?} {:>11.1?}",
                concurrency,
                off.rps,
                off.p50,
                off.p99,
                off.cpu_per_call,
                on.rps,
                on.p50,
                on.p99,
                on.cpu_per_call,
                on.rps / off.rps,
                on.p50.saturating_sub(off.p50),
                on.cpu_per_call.saturating_sub(off.cpu_per_call),
            );
        }
    });
}
