//! Distributed engines for micro, each behind a cargo feature.
//!
//! This crate will hold the engines that implement micro-core's traits when a service
//! outgrows one machine: an etcd registry (feature `etcd`), a NATS and JetStream broker
//! (feature `nats`), a Redis store (feature `redis`) and an mDNS registry for LANs
//! (feature `mdns`). It holds none yet: the embedded defaults in `micro-core` (the `local`
//! and `memory` registries) are what is built so far.
