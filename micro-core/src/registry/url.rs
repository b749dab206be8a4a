//! Choosing a registry by URL, from code or from `MICRO_REGISTRY`.

use std::{path::PathBuf, sync::Arc};

use super::{LocalRegistry, MemoryRegistry, RegistryError, SharedRegistry};
use crate::engine::{self, Kind, Schemes};

/// The environment variable that selects the registry: `local` (the default), `memory`, or
/// `local:///path/to/dir`.
pub const REGISTRY_ENV: &str = "MICRO_REGISTRY";

const BUILTIN: &[&str] = &["local", "local:///<dir>", "memory"];

/// Opens a registry from its full URL (scheme included), for [`register_scheme`].
pub type Opener = fn(&str) -> Result<SharedRegistry, RegistryError>;

/// Schemes added by other crates with [`register_scheme`], in the order they were added.
static SCHEMES: Schemes<Opener> = Schemes::new();

/// Teaches [`from_url`] and [`from_env`] a registry that lives outside micro-core.
///
/// micro-core cannot depend on the crates that hold distributed registries, so they add
/// themselves here: after `register_scheme("etcd", open)`, `from_url("etcd://host:2379")`
/// (and `MICRO_REGISTRY=etcd://host:2379`) calls `open` with the whole URL. A URL names
/// the scheme either before `://` or as the whole value (`etcd`). `micro::install()` (or
/// `micro_plugins::install()`) registers the schemes of the engines compiled in.
///
/// This is a small process-wide table and the only global state of the registry module.
/// Registering a scheme again replaces its opener; the built-in names (`local`, `memory`)
/// cannot be replaced.
pub fn register_scheme(scheme: &'static str, opener: Opener) {
    SCHEMES.register(scheme, opener);
}

/// Opens the registry named by `url`.
///
/// | url | registry |
/// |---|---|
/// | `local` or empty | [`LocalRegistry`] in the per-user runtime directory |
/// | `local:///some/dir` | [`LocalRegistry`] in `/some/dir` |
/// | `memory` | a new, empty [`MemoryRegistry`] |
/// | `<scheme>://…` | the registry of a scheme added with [`register_scheme`] |
///
/// # `memory` is a new registry on every call
///
/// Each `from_url("memory")` (and each [`from_env`] with `MICRO_REGISTRY=memory`) returns
/// a separate, empty registry; there is no process-wide memory registry. Two components
/// that each open the registry themselves do not see each other: a
/// [`Service`](crate::Service) built without [`registry`](crate::ServiceBuilder::registry)
/// and a [`Client::from_env`](crate::Client::from_env) in the same process get two
/// different registries, and the client never finds the service. To use the memory
/// registry in one process, open it once and share that [`SharedRegistry`]:
///
/// ```no_run
/// # fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use micro_core::{Client, Service, registry};
///
/// let shared = registry::from_url("memory")?;
/// let service = Service::builder("greeter").registry(shared.clone());
/// let client = Client::new(shared);
/// # Ok(()) }
/// ```
///
/// Within a service, [`Service::client`](crate::Service::client) already shares the
/// service's registry. `local` has no such pitfall: every instance on the same directory
/// sees the same records.
///
/// # Errors
/// [`RegistryError::EngineNotInstalled`] for the scheme of an engine of `micro-plugins`
/// (`etcd://…`) that nothing registered, naming the cargo feature to enable;
/// [`RegistryError::UnknownRegistry`] for any other value; a backend error when the local
/// registry's directory cannot be created.
pub fn from_url(url: &str) -> Result<SharedRegistry, RegistryError> {
    let url = url.trim();
    match url {
        "" | "local" => Ok(Arc::new(LocalRegistry::new()?)),
        "memory" => Ok(Arc::new(MemoryRegistry::new())),
        _ => {
            if let Some(dir) = url.strip_prefix("local://")
                && dir.starts_with('/')
            {
                return Ok(Arc::new(LocalRegistry::with_dir(PathBuf::from(dir))?));
            }
            if let Some(open) = SCHEMES.opener(url) {
                return open(url);
            }
            if let Some(feature) = engine::feature_for(Kind::Registry, url) {
                return Err(RegistryError::EngineNotInstalled {
                    url: url.to_owned(),
                    feature,
                });
            }
            Err(RegistryError::UnknownRegistry {
                url: url.to_owned(),
                expected: SCHEMES.known(BUILTIN),
            })
        }
    }
}

/// Opens the registry named by `MICRO_REGISTRY`, or the local registry when it is unset.
///
/// Like [`from_url`], `MICRO_REGISTRY=memory` gives a new, empty registry on every call:
/// components of one process that each call `from_env` (a service and a
/// [`Client::from_env`](crate::Client::from_env), say) do not see each other. Open the
/// registry once and pass the same [`SharedRegistry`] to each of them instead.
///
/// # Errors
/// As [`from_url`]; the error names the variable's value.
pub fn from_env() -> Result<SharedRegistry, RegistryError> {
    match std::env::var(REGISTRY_ENV) {
        Ok(value) => from_url(&value),
        Err(std::env::VarError::NotPresent) => from_url("local"),
        Err(std::env::VarError::NotUnicode(value)) => Err(RegistryError::UnknownRegistry {
            url: value.to_string_lossy().into_owned(),
            expected: SCHEMES.known(BUILTIN),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_registry_is_named_with_alternatives() {
        let err = from_url("zookeeper://x").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("zookeeper://x"), "{msg}");
        assert!(msg.contains("local") && msg.contains("memory"), "{msg}");
    }

    #[test]
    fn registered_schemes_open_and_are_listed() {
        fn open(url: &str) -> Result<SharedRegistry, RegistryError> {
            assert!(url.starts_with("urltest"), "{url}");
            Ok(Arc::new(MemoryRegistry::new()))
        }
        fn fail(url: &str) -> Result<SharedRegistry, RegistryError> {
            Err(RegistryError::backend_msg(url, "refused"))
        }
        register_scheme("urltest", fail);
        assert!(from_url("urltest://a:1").is_err());
        register_scheme("urltest", open);
        assert_eq!(from_url("urltest://a:1,b:2?x=y").unwrap().name(), "memory");
        assert_eq!(from_url(" urltest ").unwrap().name(), "memory");
        // Built-in names win; other schemes still fail and list the added one.
        assert_eq!(from_url("memory").unwrap().name(), "memory");
        let msg = from_url("urltestx://a").unwrap_err().to_string();
        assert!(msg.contains("urltest://"), "{msg}");
        assert!(msg.contains("memory"), "{msg}");
    }

    #[test]
    fn plugin_scheme_without_its_engine_names_the_feature() {
        let err = from_url("etcd://127.0.0.1:2379").unwrap_err();
        assert!(
            matches!(
                err,
                RegistryError::EngineNotInstalled {
                    feature: "etcd",
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("etcd://127.0.0.1:2379"), "{msg}");
        assert!(msg.contains("features = [\"etcd\"]"), "{msg}");
        assert!(msg.contains("micro::install()"), "{msg}");
        assert!(matches!(
            from_url("etcd").unwrap_err(),
            RegistryError::EngineNotInstalled { .. }
        ));
    }

    #[test]
    fn relative_local_dir_is_rejected() {
        assert!(from_url("local://relative/dir").is_err());
    }
}
