//! The local broker's wire protocol, `micro.broker.v1`, generated from
//! `micro-core/proto/micro/broker/v1/broker.proto`. See [`LocalBroker`](super::LocalBroker)
//! for how it is used.

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

include!(concat!(env!("OUT_DIR"), "/micro.broker.v1.rs"));
