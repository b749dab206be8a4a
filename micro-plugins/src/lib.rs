//! Distributed engines for micro, each behind a cargo feature.
//!
//! This crate holds the engines that implement micro-core's traits when a service outgrows
//! one machine:
//!
//! | feature | module | what |
//! |---|---|---|
//! | `nats` | [`nats`](crate) (`micro_plugins::nats`) | a [`Broker`](micro_core::broker::Broker) on NATS core pub/sub and JetStream |
//!
//! Being built: an etcd registry (feature `etcd`), a Redis store (feature `redis`) and an
//! mDNS registry for LANs (feature `mdns`).

#[cfg(feature = "nats")]
pub mod nats;
