use std::{error::Error as StdError, fmt, io};

type Source = Box<dyn StdError + Send + Sync + 'static>;

/// An error from a [`Registry`](super::Registry) operation or from choosing a registry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The record handed to `register` or `deregister` cannot be stored.
    #[error("invalid service record: {0}")]
    InvalidRecord(String),

    /// A registry URL (`MICRO_REGISTRY` or code) names no known registry.
    #[error("unknown registry {url:?}: expected one of {expected}")]
    UnknownRegistry {
        /// The value that was given.
        url: String,
        /// The registries this build knows, for example `local, memory`.
        expected: String,
    },

    /// A registry URL names an engine of `micro-plugins` that this program did not
    /// install: the feature that holds it is off, or `micro::install()` was not called.
    #[error(
        "registry {url:?} needs the {feature} engine, which this program has not installed: \
         enable the {feature:?} feature of micro (micro = {{ features = [\"{feature}\"] }}) \
         and call micro::install() at the start of main"
    )]
    EngineNotInstalled {
        /// The value that was given.
        url: String,
        /// The cargo feature of `micro` (and `micro-plugins`) that holds the engine.
        feature: &'static str,
    },

    /// The backend failed.
    #[error("registry {registry}: {message}")]
    Backend {
        /// The registry's name, for example `local`.
        registry: String,
        /// What failed.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<Source>,
    },
}

impl RegistryError {
    /// A backend failure of `registry` with an underlying cause.
    pub fn backend(
        registry: impl fmt::Display,
        message: impl fmt::Display,
        source: impl Into<Source>,
    ) -> Self {
        Self::Backend {
            registry: registry.to_string(),
            message: message.to_string(),
            source: Some(source.into()),
        }
    }

    /// A backend failure of `registry` without an underlying cause.
    pub fn backend_msg(registry: impl fmt::Display, message: impl fmt::Display) -> Self {
        Self::Backend {
            registry: registry.to_string(),
            message: message.to_string(),
            source: None,
        }
    }

    /// A backend I/O failure of `registry` while doing `what`.
    pub fn io(registry: impl fmt::Display, what: impl fmt::Display, err: io::Error) -> Self {
        Self::backend(registry, what, err)
    }
}
