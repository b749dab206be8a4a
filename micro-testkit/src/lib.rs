//! Test kit for micro's resilience acceptance tests (issue 3): real server processes on
//! loopback, faults injected by signals and by a control RPC, load from an open-loop
//! generator.
//!
//! - [`Cluster`] starts `micro-testsrv` processes on a private local registry, restarts
//!   and kills them;
//! - [`ControlClient`] switches one node's behaviour (fail, slow down, NOT_SERVING) and
//!   reads its counters, over a plain tonic channel;
//! - [`OpenLoop`] fires calls at a fixed rate and returns a [`Report`];
//! - [`Proc`] and [`RegistryDir`] are the process helpers underneath;
//! - [`FixtureGreeter`] is the greeter with test-only behaviour (delays, a stalling
//!   stream, request-id echo), served by `greeter-fixture` and by in-process tests;
//! - [`RecordingConnector`] records the client's connection attempts;
//! - [`exclusive`] keeps load tests from running at the same time;
//! - [`scenario`] holds fault scenarios that tests assert on and benchmarks report.
//!
//! With feature `etcd`, `micro-testsrv` can register in etcd (`MICRO_REGISTRY=etcd://…`)
//! and `tests/etcd_outage.rs` runs etcd's outage acceptance test.
//!
//! # Examples
//!
//! In an integration test of this crate (`tests/*.rs`), where cargo sets
//! `CARGO_BIN_EXE_micro-testsrv`:
//!
//! ```no_run
//! # async fn demo(testsrv: &str) {
//! use std::time::Duration;
//! use micro_testkit::{Cluster, OpenLoop, outcome, pb};
//!
//! # /*
//! let testsrv = env!("CARGO_BIN_EXE_micro-testsrv");
//! # */
//! let cluster = Cluster::start(testsrv, 3).await;
//! let probe = pb::probe_client::ProbeClient::new(cluster.client().channel("probe"));
//! let report = OpenLoop::new(200, Duration::from_secs(2))
//!     .run(|_| {
//!         let mut probe = probe.clone();
//!         async move { outcome(probe.work(pb::WorkRequest::default()).await) }
//!     })
//!     .await;
//! assert_eq!(report.failed(), 0, "{}", report.summary());
//! # }
//! ```

pub mod cluster;
pub mod connect;
pub mod control;
pub mod greeter;
pub mod load;
pub mod probe;
pub mod process;
pub mod scenario;
pub mod serial;

/// The generated `testkit.v1` messages, `probe_client` and `probe_server`.
#[allow(unreachable_pub, missing_docs, missing_debug_implementations)]
pub mod pb {
    micro::include_proto!("testkit.v1");
}

pub use cluster::Cluster;
pub use connect::{ConnectAttempt, RecordingConnector};
pub use control::ControlClient;
pub use greeter::FixtureGreeter;
pub use load::{Failure, OpenLoop, Outcome, Record, Report, outcome};
pub use probe::Probe;
pub use process::{Proc, READY_TIMEOUT, Ready, RegistryDir};
pub use serial::{Exclusive, exclusive};
