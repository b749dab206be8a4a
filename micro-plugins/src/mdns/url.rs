//! `mdns://[?interface=lo|name[,name…]][&port=N]` and its hookup into micro-core's
//! `registry::from_url`.

use std::sync::Arc;

use micro_core::registry::{self, RegistryError, SharedRegistry};

use super::{MdnsRegistry, MdnsRegistryBuilder};

/// The URL scheme of the mDNS registry.
pub const SCHEME: &str = "mdns";

/// Opens the mDNS registry a URL names:
///
/// | url | registry |
/// |---|---|
/// | `mdns` or `mdns://` | every interface, port 5353 |
/// | `mdns://?interface=lo` | IPv4 loopback only: nothing is sent on another interface |
/// | `mdns://?interface=eth0,eth1` | only these interfaces |
/// | `mdns://?interface=lo&port=5454` | loopback only, on a private port |
///
/// Starts the engine thread (no runtime needed).
///
/// # Errors
/// [`RegistryError::Backend`] for another scheme, a host in the URL, an unknown parameter,
/// an invalid port; the errors of [`MdnsRegistryBuilder::build`].
pub fn from_url(url: &str) -> Result<MdnsRegistry, RegistryError> {
    builder_from_url(url)?.build()
}

fn builder_from_url(url: &str) -> Result<MdnsRegistryBuilder, RegistryError> {
    let url = url.trim();
    let rest = if url == SCHEME {
        ""
    } else if let Some(rest) = url.strip_prefix("mdns://") {
        rest
    } else {
        return Err(RegistryError::backend_msg(
            url,
            "not an mDNS URL; expected mdns://[?interface=lo][&port=5353]",
        ));
    };
    let (host, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !host.trim_end_matches('/').is_empty() {
        return Err(RegistryError::backend_msg(
            url,
            format!("mDNS has no server: remove {host:?}; expected mdns://[?interface=lo]"),
        ));
    }
    let mut builder = MdnsRegistry::builder();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        builder = match name {
            "interface" if value == "lo" => builder.interface_loopback_only(),
            "interface" if value.is_empty() || value == "all" => builder.all_interfaces(),
            "interface" => builder.interfaces(value.split(',').map(str::trim)),
            "port" => match value.parse::<u16>() {
                Ok(port) if port != 0 => builder.port(port),
                _ => {
                    return Err(RegistryError::backend_msg(
                        url,
                        format!("port {value:?} is not a UDP port (1-65535)"),
                    ));
                }
            },
            other => {
                return Err(RegistryError::backend_msg(
                    url,
                    format!("unknown parameter {other:?}; expected interface or port"),
                ));
            }
        };
    }
    Ok(builder)
}

fn open(url: &str) -> Result<SharedRegistry, RegistryError> {
    Ok(Arc::new(from_url(url)?))
}

/// Teaches micro-core's [`registry::from_url`] and [`registry::from_env`] (so
/// `MICRO_REGISTRY`) the `mdns://` scheme. Idempotent; [`crate::install`] calls it.
pub fn install() {
    registry::register_scheme(SCHEME, open);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mdns::Interfaces;

    #[test]
    fn parses_interfaces_and_port() {
        let b = builder_from_url("mdns").unwrap();
        assert_eq!((b.interfaces.clone(), b.port), (Interfaces::All, 5353));
        assert_eq!(b.url(), "mdns://");
        let b = builder_from_url("mdns://?interface=lo").unwrap();
        assert_eq!(b.interfaces, Interfaces::LoopbackV4);
        assert_eq!(b.url(), "mdns://?interface=lo");
        let b = builder_from_url(" mdns://?interface=eth0, eth1&port=5454").unwrap();
        assert_eq!(
            b.interfaces,
            Interfaces::Named(vec!["eth0".into(), "eth1".into()])
        );
        assert_eq!(b.url(), "mdns://?interface=eth0,eth1&port=5454");
    }

    #[test]
    fn rejects_bad_urls() {
        for url in [
            "mdns://host:5353",
            "mdns://?port=0",
            "mdns://?port=x",
            "mdns://?colour=blue",
            "mdnsx://",
        ] {
            assert!(builder_from_url(url).is_err(), "{url}");
        }
    }
}
