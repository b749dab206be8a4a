//! Real engines for micro's integration tests: private etcd, NATS (with JetStream), Redis and
//! memcached instances, a multi-member etcd cluster and a multi-node NATS cluster.
//!
//! Each instance runs as a child process on free ports of 127.0.0.1, with its data and log in
//! a temporary directory. `start` returns once the engine is ready (etcd: `/health` says
//! `"health":"true"`; NATS: the monitoring `/healthz` answers `ok`; Redis: `PING` answers
//! `+PONG`; memcached: `version` answers `VERSION …`), never after a fixed sleep. Tests can stop, restart (same ports, same data), kill,
//! pause (SIGSTOP) and resume (SIGCONT) an instance. Dropping a value kills and reaps its
//! process, also while a test unwinds from a panic.
//!
//! Every process runs through [`child::Proc`], the workspace's one runner for child
//! processes under test: micro-testkit and the integration tests (tests/support) start their
//! servers with it too.
//!
//! Binaries are found through an environment variable, then `PATH` (see [`EtcdServer`],
//! [`NatsServer`], [`RedisServer`], [`MemcachedServer`]); `scripts/test` installs them and exports the variables.
//! A missing binary panics with a message that names `scripts/test`.
//!
//! ```no_run
//! # async fn demo() {
//! let mut etcd = micro_test_engines::EtcdServer::start().await;
//! let endpoint = etcd.endpoint(); // "127.0.0.1:PORT", for etcd-client
//! etcd.stop().await;
//! etcd.restart().await; // same port, same data
//! # let _ = endpoint;
//! # }
//! ```

mod binary;
pub mod child;
mod etcd;
mod memcached;
mod nats;
pub mod probe;
mod redis;

pub use binary::{optional_tool, under_ci};
pub use etcd::{EtcdCluster, EtcdMember, EtcdServer};
pub use memcached::MemcachedServer;
pub use nats::{NatsCluster, NatsNode, NatsServer};
pub use redis::RedisServer;

/// How many times a start picks new ports after an engine reported "address already in use".
const PORT_ATTEMPTS: usize = 5;

/// `n` distinct free ports on 127.0.0.1: bound to port 0 together (so they differ), then
/// released for the engine to take. Another process can take one in between: callers retry on
/// "address already in use".
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| {
            std::net::TcpListener::bind(("127.0.0.1", 0))
                .unwrap_or_else(|e| panic!("cannot bind a free port on 127.0.0.1: {e}"))
        })
        .collect();
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .unwrap_or_else(|e| panic!("local_addr of a bound listener: {e}"))
                .port()
        })
        .collect()
}

fn temp_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"))
}
