//! Choosing a broker by URL, from code or from `MICRO_BROKER`.

use std::sync::Arc;

use super::{BrokerError, LocalBroker, MemoryBroker, SharedBroker};
use crate::registry::{self, SharedRegistry};

/// The environment variable that selects the broker: `local` (the default) or `memory`.
pub const BROKER_ENV: &str = "MICRO_BROKER";

const KNOWN: &str = "local, memory (engines such as nats:// come from micro-plugins)";

/// Opens the broker named by `url`; the local broker uses the registry named by
/// `MICRO_REGISTRY`.
///
/// | url | broker |
/// |---|---|
/// | `local` or empty | [`LocalBroker`] on the registry of [`registry::from_env`] |
/// | `memory` | a new, empty [`MemoryBroker`]: open it once and share it |
///
/// # Errors
/// [`BrokerError::Invalid`] for an unknown value, listing the known ones; a backend error
/// when the registry cannot be opened.
pub fn from_url(url: &str) -> Result<SharedBroker, BrokerError> {
    open(url, || {
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
    open(url, || Ok(registry))
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
    registry: impl FnOnce() -> Result<SharedRegistry, BrokerError>,
) -> Result<SharedBroker, BrokerError> {
    match url.trim() {
        "" | "local" => Ok(Arc::new(LocalBroker::new(registry()?))),
        "memory" => Ok(Arc::new(MemoryBroker::new())),
        other => Err(unknown(other)),
    }
}

fn unknown(url: &str) -> BrokerError {
    BrokerError::Invalid {
        what: "broker",
        value: url.to_owned(),
        reason: format!("unknown broker; expected one of {KNOWN} (set {BROKER_ENV})"),
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
