use std::{io, time::Duration};

use crate::{broker::BrokerError, registry::RegistryError};

/// An error configuring, starting or running a [`Service`](super::Service).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The service name cannot be registered.
    #[error("invalid service name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The TTL and register interval do not leave room for a missed heartbeat.
    #[error(
        "register interval {interval:?} must be less than half the TTL {ttl:?}, \
         so that one missed heartbeat does not expire the node"
    )]
    InvalidInterval {
        /// The register interval given.
        interval: Duration,
        /// The TTL given.
        ttl: Duration,
    },

    /// An environment variable holds a value that cannot be used.
    #[error("invalid {var}={value:?}: {reason}")]
    InvalidEnv {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An address cannot be parsed.
    #[error("invalid address {address:?}: {reason}")]
    InvalidAddress {
        /// The address given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The listening socket could not be opened.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address.
        address: String,
        /// The cause.
        #[source]
        source: io::Error,
    },

    /// A registered file descriptor set cannot be decoded.
    #[error("invalid file descriptor set for service {service}: {reason}")]
    Descriptor {
        /// The gRPC service whose descriptors are broken.
        service: String,
        /// What failed.
        reason: String,
    },

    /// The registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),

    /// The broker failed, or refused a subscription or topic.
    #[error(transparent)]
    Broker(#[from] BrokerError),

    /// The gRPC server failed.
    #[error("server failed: {0}")]
    Server(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),

    /// The TLS configuration (`ServiceBuilder::tls` or `MICRO_TLS_*`) cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),

    /// The process' signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] io::Error),
}
