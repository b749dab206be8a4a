//! The platform commands of `micro`: `publish` and `subscribe` (the event service or any
//! broker), `kv` (the kv service or any store), `config` (the config service) and `auth`
//! (the auth service).

mod auth;
mod config;
mod kv;
mod publish;

pub(crate) use auth::{AuthArgs, auth};
pub(crate) use config::{ConfigArgs, config};
pub(crate) use kv::{KvArgs, kv};
pub(crate) use publish::{PublishArgs, SubscribeArgs, publish, subscribe};

/// The URL that selects a platform service found through the registry.
const SERVICE_URL: &str = "service";
