//! [`install`]: hooks the engines compiled in into `MICRO_REGISTRY`.

/// Lets [`registry::from_url`](crate::registry::from_url) and everything built on it
/// (`MICRO_REGISTRY`, [`Service::builder`](crate::Service::builder),
/// [`Client::from_env`](crate::Client::from_env)) open the registries of the engines this
/// build enables (`etcd://…` with feature `etcd`, `mdns://…` with feature `mdns`) and, with
/// feature `platform`, the platform's services (`service://host:port` for
/// `MICRO_REGISTRY`, `service` for `MICRO_STORE`, `MICRO_SYNC` and `MICRO_BROKER`).
///
/// Call it once at the start of `main`, before building a service or client. It is
/// idempotent, and does nothing without engine or `platform` features, so a program can
/// always call it.
///
/// # Examples
///
/// ```no_run
/// #[tokio::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     micro::install();
///     // With feature `etcd`, MICRO_REGISTRY=etcd://127.0.0.1:2379 now selects etcd.
///     let client = micro::Client::from_env()?;
///     # let _ = client;
///     Ok(())
/// }
/// ```
pub fn install() {
    #[cfg(feature = "platform")]
    micro_platform::install();
    #[cfg(any(
        feature = "etcd",
        feature = "nats",
        feature = "mdns",
        feature = "redis",
        feature = "memcached"
    ))]
    micro_plugins::install();
}
