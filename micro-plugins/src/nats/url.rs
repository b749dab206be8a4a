//! `MICRO_BROKER=nats://…`: the NATS broker chosen by URL.

use std::sync::Arc;

use micro_core::{
    broker::{self, BrokerError, LazyBroker, SharedBroker},
    registry::SharedRegistry,
};

use super::{NatsBroker, NatsBrokerBuilder};

/// The URL scheme of the NATS broker.
pub const SCHEME: &str = "nats";

/// The server when a URL names none.
const DEFAULT_SERVER: &str = "nats://127.0.0.1:4222";

/// The broker builder for `url`:
/// `nats://host:port[,host:port…][?jetstream=true|false&prefix=…]` (`nats` alone is
/// `nats://127.0.0.1:4222`).
///
/// # Errors
/// [`BrokerError::Invalid`] for a URL of another scheme, an unknown parameter or a bad
/// value, naming it.
pub fn builder_from_url(url: &str) -> Result<NatsBrokerBuilder, BrokerError> {
    let url = url.trim();
    let invalid = |reason: String| BrokerError::Invalid {
        what: "broker",
        value: url.to_owned(),
        reason,
    };
    let rest = if url == SCHEME {
        ""
    } else if let Some(rest) = url.strip_prefix("nats://") {
        rest
    } else {
        return Err(invalid(
            "not a NATS URL; expected nats://host:port[,host:port…][?jetstream=true&prefix=…]"
                .to_owned(),
        ));
    };
    let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
    let servers: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|host| !host.is_empty())
        .map(|host| {
            if host.contains("://") {
                host.to_owned()
            } else {
                format!("nats://{host}")
            }
        })
        .collect();
    let servers = if servers.is_empty() {
        DEFAULT_SERVER.to_owned()
    } else {
        servers.join(",")
    };
    let mut builder = NatsBroker::builder(&servers);
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        builder = match name {
            "jetstream" => match value {
                "true" | "" => builder.jetstream(true),
                "false" => builder.jetstream(false),
                other => {
                    return Err(invalid(format!(
                        "jetstream={other:?}; expected true or false"
                    )));
                }
            },
            "prefix" => builder.prefix(value),
            other => {
                return Err(invalid(format!(
                    "unknown parameter {other:?}; expected jetstream or prefix"
                )));
            }
        };
    }
    Ok(builder)
}

/// The broker for `url`, connecting on first use (see [`LazyBroker`]).
fn open(url: &str, _registry: Option<SharedRegistry>) -> Result<SharedBroker, BrokerError> {
    let builder = builder_from_url(url)?;
    let connect: broker::Connect = Box::new(move || {
        let builder = builder.clone();
        Box::pin(async move { Ok(Arc::new(builder.connect().await?) as SharedBroker) })
    });
    Ok(Arc::new(LazyBroker::new(SCHEME, connect)))
}

/// Teaches micro-core's [`broker::from_url`] and [`broker::from_env`] (so `MICRO_BROKER`,
/// and every service with subscriptions) the `nats://` scheme. Idempotent;
/// [`crate::install`] calls it.
pub fn install() {
    broker::register_scheme(SCHEME, open);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_servers_and_options() {
        assert!(builder_from_url("nats").is_ok());
        assert!(
            builder_from_url("nats://127.0.0.1:4222,127.0.0.1:4223?jetstream=true&prefix=app")
                .is_ok()
        );
        for (url, needle) in [
            ("redis://x", "not a NATS URL"),
            ("nats://h?jetstream=maybe", "jetstream=\"maybe\""),
            ("nats://h?color=blue", "unknown parameter \"color\""),
        ] {
            let Err(err) = builder_from_url(url) else {
                panic!("{url} accepted");
            };
            assert!(err.to_string().contains(needle), "{url}: {err}");
        }
    }
}
