//! `etcd://host:port[,host:port…][?namespace=…&prefix=…]` and its hookup into micro-core's
//! `registry::from_url`.

use std::sync::Arc;

use micro_core::registry::{self, RegistryError, SharedRegistry};

use super::{DEFAULT_ENDPOINT, EtcdRegistry};

/// The URL scheme of the etcd registry.
pub const SCHEME: &str = "etcd";

/// Opens the etcd registry a URL names:
///
/// | url | registry |
/// |---|---|
/// | `etcd://127.0.0.1:2379` | one endpoint, namespace `default` |
/// | `etcd://10.0.0.1:2379,10.0.0.2:2379?namespace=dev` | a cluster, namespace `dev` |
/// | `etcd://h:2379?namespace=dev&prefix=/acme/registry/` | keys under `/acme/registry/dev/` |
/// | `etcd` or `etcd://` | `127.0.0.1:2379` |
///
/// Does not connect: the registry connects on its first operation.
///
/// # Errors
/// [`RegistryError::Backend`] for another scheme, an unknown query parameter or an invalid
/// namespace or prefix.
pub fn from_url(url: &str) -> Result<EtcdRegistry, RegistryError> {
    let url = url.trim();
    let rest = if url == SCHEME {
        ""
    } else if let Some(rest) = url.strip_prefix("etcd://") {
        rest
    } else {
        return Err(RegistryError::backend_msg(
            url,
            "not an etcd URL; expected etcd://host:port[,host:port…][?namespace=…]",
        ));
    };
    let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut endpoints: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect();
    if endpoints.is_empty() {
        endpoints.push(DEFAULT_ENDPOINT.to_owned());
    }
    let mut builder = EtcdRegistry::builder(endpoints);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        builder = match name {
            "namespace" => builder.namespace(value),
            "prefix" => builder.prefix(value),
            other => {
                return Err(RegistryError::backend_msg(
                    url,
                    format!("unknown parameter {other:?}; expected namespace or prefix"),
                ));
            }
        };
    }
    builder.build()
}

fn open(url: &str) -> Result<SharedRegistry, RegistryError> {
    Ok(Arc::new(from_url(url)?))
}

/// Teaches micro-core's [`registry::from_url`] and [`registry::from_env`] (so
/// `MICRO_REGISTRY`) and [`micro_core::sync::from_url`] (`MICRO_SYNC`) the `etcd://` scheme.
/// Idempotent; [`crate::install`] calls it.
pub fn install() {
    registry::register_scheme(SCHEME, open);
    micro_core::sync::register_scheme(SCHEME, open_sync);
}

/// `etcd://host:port[,host:port…]` for [`micro_core::sync::from_url`].
fn open_sync(
    url: String,
) -> std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<micro_core::sync::SharedSync, micro_core::sync::SyncError>,
            > + Send,
    >,
> {
    Box::pin(async move {
        let hosts = url
            .strip_prefix("etcd://")
            .unwrap_or(&url)
            .split(['?', '/'])
            .next()
            .unwrap_or_default();
        let endpoints: Vec<&str> = hosts.split(',').filter(|h| !h.is_empty()).collect();
        let endpoints = if endpoints.is_empty() {
            vec![DEFAULT_ENDPOINT]
        } else {
            endpoints
        };
        let sync = super::EtcdSync::connect(endpoints).await?;
        Ok(std::sync::Arc::new(sync) as micro_core::sync::SharedSync)
    })
}

#[cfg(test)]
mod tests {
    use micro_core::Registry;

    use super::*;

    #[test]
    fn parses_hosts_and_namespace() {
        let r = from_url("etcd://127.0.0.1:2379, 127.0.0.1:22379?namespace=dev").unwrap();
        assert_eq!(r.endpoints(), ["127.0.0.1:2379", "127.0.0.1:22379"]);
        assert_eq!(r.key_prefix(), "/micro/registry/dev/");
        assert_eq!(
            r.name(),
            "etcd://127.0.0.1:2379,127.0.0.1:22379?namespace=dev"
        );
        assert_eq!(
            r.key("greeter", "n1"),
            "/micro/registry/dev/greeter/n1".to_owned()
        );

        let r = from_url("etcd").unwrap();
        assert_eq!(r.endpoints(), [DEFAULT_ENDPOINT]);
        assert_eq!(r.key_prefix(), "/micro/registry/default/");
        assert_eq!(r.name(), "etcd://127.0.0.1:2379");

        let r = from_url("etcd://h:1?prefix=/acme/reg&namespace=staging").unwrap();
        assert_eq!(r.key_prefix(), "/acme/reg/staging/");
    }

    #[test]
    fn rejects_bad_urls() {
        for url in [
            "etcd://h:1?namespace=a/b",
            "etcd://h:1?namespace=",
            "etcd://h:1?prefix=relative",
            "etcd://h:1?colour=blue",
            "etcdx://h:1",
        ] {
            assert!(from_url(url).is_err(), "{url}");
        }
    }

    #[test]
    fn install_hooks_into_micro_core() {
        install();
        let r = registry::from_url("etcd://127.0.0.1:1?namespace=x").unwrap();
        assert_eq!(r.name(), "etcd://127.0.0.1:1?namespace=x");
        let err = registry::from_url("nope://x").unwrap_err().to_string();
        assert!(err.contains("etcd://"), "{err}");
    }
}
