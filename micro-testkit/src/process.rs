//! Child processes under test: [`Proc`] (readiness, signals, kill-on-drop; the runner is
//! micro-test-engines' [`micro_test_engines::child`], shared with the workspace's
//! integration tests) and [`RegistryDir`] (a private local registry).

use std::path::Path;

pub use micro_test_engines::child::{Proc, READY_TIMEOUT, Ready, parse_ready};

/// A private local registry directory, removed on drop.
#[derive(Debug)]
pub struct RegistryDir {
    dir: tempfile::TempDir,
    url: String,
}

// === impl RegistryDir ===

impl RegistryDir {
    /// A new, empty registry directory.
    ///
    /// # Panics
    /// When no temporary directory can be made.
    pub fn new() -> Self {
        let dir = tempfile::tempdir()
            .unwrap_or_else(|err| panic!("cannot make a registry directory: {err}"));
        let url = format!("local://{}", dir.path().display());
        Self { dir, url }
    }

    /// The `MICRO_REGISTRY` value naming this registry: `local:///tmp/…`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A handle on the registry, as a process given [`RegistryDir::url`] opens it.
    ///
    /// # Panics
    /// When the local registry cannot use the directory.
    pub fn registry(&self) -> micro::registry::SharedRegistry {
        micro::registry::from_url(&self.url)
            .unwrap_or_else(|err| panic!("cannot open registry {}: {err}", self.url))
    }
}

impl Default for RegistryDir {
    fn default() -> Self {
        Self::new()
    }
}
