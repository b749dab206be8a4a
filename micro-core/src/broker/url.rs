//! Choosing a broker by URL, from code or from `MICRO_BROKER`.

use std::sync::Arc;

use super::{BrokerError, LocalBroker, MemoryBroker, SharedBroker};
use crate::engine::{self, Kind, Schemes};
use crate::registry::{self, SharedRegistry};

/// The environment variable that selects the broker: `local` (the default), `memory`, or a
/// scheme added with [`register_scheme`].
pub const BROKER_ENV: &str = "MICRO_BROKER";

/// Opens a broker from its full URL (scheme included), for [`register_scheme`]. The
/// registry is the one given to [`from_url_with_registry`] (a service passes its own), or
/// `None` from [`from_url`]: an opener that needs one then opens `MICRO_REGISTRY` itself.
pub type Opener = fn(&str, Option<SharedRegistry>) -> Result<SharedBroker, BrokerError>;

/// Schemes added by other crates with [`register_scheme`], in the order they were added.
static SCHEMES: Schemes<Opener> = Schemes::new();

/// Teaches [`from_url`] and [`from_env`] (and their `_with_registry` forms) a broker that
/// lives outside micro-core (the event service, NATS…): after
/// `register_scheme("service", open)`, `from_url("service://127.0.0.1:7700")` calls `open`
/// with the whole URL. A scheme matches `<scheme>://…` and the bare `<scheme>`.
/// Registering a scheme again replaces its opener; `local` and `memory` cannot be
/// replaced.
pub fn register_scheme(scheme: &'static str, opener: Opener) {
    SCHEMES.register(scheme, opener);
}

/// Opens the broker named by `url`; the local broker uses the registry named by
/// `MICRO_REGISTRY`.
///
/// | url | broker |
/// |---|---|
/// | `local` or empty | [`LocalBroker`] on the registry of [`registry::from_env`] |
/// | `memory` | a new, empty [`MemoryBroker`]: open it once and share it |
/// | `<scheme>` or `<scheme>://…` | the broker of a scheme added with [`register_scheme`] (for example `service://host:port` once `micro_platform::install()` ran) |
///
/// # Errors
/// [`BrokerError::Invalid`] for an unknown value, listing the known ones; a backend error
/// when the registry cannot be opened; the opener's error.
pub fn from_url(url: &str) -> Result<SharedBroker, BrokerError> {
    open(url, None, || {
        registry::from_env().map_err(|err| BrokerError::Backend {
            broker: "local".to_owned(),
            message: "cannot open the registry named by MICRO_REGISTRY".to_owned(),
            source: Some(Box::new(err)),
        })
    })
}

/// Opens the broker named by `url`; the local broker uses `registry` (a service passes its
/// own).
///
/// # Errors
/// As [`from_url`].
pub fn from_url_with_registry(
    url: &str,
    registry: SharedRegistry,
) -> Result<SharedBroker, BrokerError> {
    open(url, Some(registry.clone()), || Ok(registry))
}

/// Opens the broker named by `MICRO_BROKER`, `local` when unset.
///
/// # Errors
/// As [`from_url`]; the error names the variable's value.
pub fn from_env() -> Result<SharedBroker, BrokerError> {
    from_url(&env_value()?)
}

/// Opens the broker named by `MICRO_BROKER` (`local` when unset) on `registry`.
///
/// # Errors
/// As [`from_url`].
pub fn from_env_with_registry(registry: SharedRegistry) -> Result<SharedBroker, BrokerError> {
    from_url_with_registry(&env_value()?, registry)
}

fn env_value() -> Result<String, BrokerError> {
    match std::env::var(BROKER_ENV) {
        Ok(value) => Ok(value),
        Err(std::env::VarError::NotPresent) => Ok("local".to_owned()),
        Err(std::env::VarError::NotUnicode(value)) => Err(unknown(&value.to_string_lossy())),
    }
}

fn open(
    url: &str,
    given: Option<SharedRegistry>,
    registry: impl FnOnce() -> Result<SharedRegistry, BrokerError>,
) -> Result<SharedBroker, BrokerError> {
    let url = url.trim();
    match url {
        "" | "local" => return Ok(Arc::new(LocalBroker::new(registry()?))),
        "memory" => return Ok(Arc::new(MemoryBroker::new())),
        _ => {}
    }
    match SCHEMES.opener(url) {
        Some(open) => open(url, given),
        None => Err(unknown(url)),
    }
}

fn unknown(url: &str) -> BrokerError {
    BrokerError::Invalid {
        what: "broker",
        value: url.to_owned(),
        reason: format!(
            "unknown broker; expected one of {} (set {BROKER_ENV}){}",
            SCHEMES.known(&["local", "memory"]),
            engine::not_installed_hint(Kind::Broker, url)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_broker_is_named_with_alternatives() {
        let Err(err) =
            from_url_with_registry("kafka://x", Arc::new(registry::MemoryRegistry::new()))
        else {
            panic!("kafka accepted");
        };
        let msg = err.to_string();
        assert!(msg.contains("kafka://x"), "{msg}");
        assert!(msg.contains("local") && msg.contains("memory"), "{msg}");
    }

    fn opened_by_test(
        url: &str,
        registry: Option<SharedRegistry>,
    ) -> Result<SharedBroker, BrokerError> {
        Err(BrokerError::Invalid {
            what: "broker",
            value: url.to_owned(),
            reason: format!("opened by urltest with a registry: {}", registry.is_some()),
        })
    }

    #[test]
    fn registered_schemes_open_bare_and_with_an_address() -> Result<(), BrokerError> {
        register_scheme("urltest", opened_by_test);
        let registry: SharedRegistry = Arc::new(registry::MemoryRegistry::new());
        for url in ["urltest", " urltest://127.0.0.1:1 "] {
            let Err(err) = from_url_with_registry(url, registry.clone()) else {
                panic!("{url} opened");
            };
            let msg = err.to_string();
            assert!(
                msg.contains("opened by urltest with a registry: true"),
                "{msg}"
            );
            assert!(msg.contains(url.trim()), "{msg}");
        }
        // Listed among the known values of an unknown one.
        let Err(err) = from_url_with_registry("kafka://x", registry.clone()) else {
            panic!("kafka accepted");
        };
        assert!(err.to_string().contains("urltest://"), "{err}");
        // The built-in names stay.
        assert_eq!(from_url_with_registry("memory", registry)?.name(), "memory");
        Ok(())
    }

    #[test]
    fn memory_and_local_open() -> Result<(), BrokerError> {
        let registry: SharedRegistry = Arc::new(registry::MemoryRegistry::new());
        assert_eq!(
            from_url_with_registry("memory", registry.clone())?.name(),
            "memory"
        );
        assert_eq!(from_url_with_registry(" local ", registry)?.name(), "local");
        Ok(())
    }
}
