//! Distributed engines for micro, each behind a cargo feature.
//!
//! This crate holds the engines that implement micro-core's traits when a service outgrows
//! one machine:
//!
//! | feature | module | engine |
//! |---|---|---|
//! | `etcd` | `micro_plugins::etcd` | a [`Registry`](micro_core::Registry) on an etcd v3 cluster, selected with `MICRO_REGISTRY=etcd://host:port[,host:port…][?namespace=…]` |
//! | `memcached` | `micro_plugins::memcached` | a [`Store`](micro_core::store::Store) on memcached (a cache: data may be evicted): `MICRO_STORE=memcached://host:port` |
//! | `mdns` | `micro_plugins::mdns` | a [`Registry`](micro_core::Registry) on multicast DNS (DNS-SD), no server: `MICRO_REGISTRY=mdns://` (LAN) or `mdns://?interface=lo` (this machine only, nothing sent elsewhere) |
//! | `nats` | `micro_plugins::nats` | a [`Broker`](micro_core::broker::Broker) on NATS core pub/sub and JetStream |
//! | `redis` | `micro_plugins::redis` | a [`Store`](micro_core::store::Store) on Redis: `MICRO_STORE=redis://host:port[/db]` |
//!
//! micro-core cannot depend on this crate, so its `registry::from_url` and `from_env` learn
//! the schemes of these engines at run time: call [`install`] once at start-up. Through the
//! `micro` facade, enable its feature of the same name (`micro = { features = ["etcd"] }`)
//! and call `micro::install()`, which calls [`install`]; the facade re-exports this crate as
//! `micro::plugins`.

#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "mdns")]
pub mod mdns;
#[cfg(feature = "memcached")]
pub mod memcached;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "redis")]
pub mod redis;

/// Registers the URL schemes of every engine compiled in with micro-core: `etcd://` (feature
/// `etcd`) and `mdns://` (feature `mdns`) with
/// [`registry::from_url`](micro_core::registry::from_url), so `MICRO_REGISTRY` can select
/// them; `redis://` (feature `redis`) and `memcached://` (feature `memcached`) with
/// [`store::from_url`](micro_core::store::from_url), so `MICRO_STORE` can; `nats://`
/// (feature `nats`) with [`broker::from_url`](micro_core::broker::from_url), so
/// `MICRO_BROKER` can. Idempotent; does nothing without features.
pub fn install() {
    #[cfg(feature = "etcd")]
    etcd::install();
    #[cfg(feature = "mdns")]
    mdns::install();
    #[cfg(feature = "memcached")]
    memcached::install();
    #[cfg(feature = "nats")]
    nats::install();
    #[cfg(feature = "redis")]
    redis::install();
}
