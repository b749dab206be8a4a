//! `micro new`: the scaffolded crate builds (offline, against this checkout) and its own
//! test passes; bad names and non-empty directories are refused.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

/// Building the new crate compiles micro and its dependencies once per target directory.
const CARGO_TIMEOUT: Duration = Duration::from_secs(15 * 60);

async fn micro_new(args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_micro"))
        .arg("new")
        .args(args)
        .output()
        .await
        .expect("run micro new")
}

/// A target directory kept between runs, next to this test's own, so repeat runs reuse
/// the compiled dependencies.
fn persistent_target() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> → target/micro-new-test
    let target = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    target.join("micro-new-test")
}

async fn cargo(dir: &Path, args: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let child = tokio::process::Command::new(cargo)
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", persistent_target())
        .env("CARGO_INCREMENTAL", "0")
        .env_remove("MICRO_REGISTRY")
        .env_remove("RUSTFLAGS")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(CARGO_TIMEOUT, child)
        .await
        .unwrap_or_else(|_| panic!("cargo {args:?} did not finish within {CARGO_TIMEOUT:?}"))
        .expect("run cargo");
    assert!(
        output.status.success(),
        "cargo {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn new_crate_builds_and_passes_its_test() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("demo");
    // The micro checkout: micro-cli's parent.
    let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let output = micro_new(&[
        "demo",
        "--dir",
        dir.to_str().unwrap(),
        "--micro-path",
        workspace,
    ])
    .await;
    assert!(
        output.status.success(),
        "micro new: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    for file in [
        "Cargo.toml",
        "build.rs",
        "proto/demo/v1/demo.proto",
        "src/lib.rs",
        "src/main.rs",
        "tests/demo.rs",
        "README.md",
        ".gitignore",
    ] {
        assert!(dir.join(file).is_file(), "{file} was created");
    }
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
    assert!(manifest.contains("micro-codegen"), "{manifest}");

    // The workspace's lock file: the versions already in the cargo cache.
    std::fs::copy(
        Path::new(workspace).join("Cargo.lock"),
        dir.join("Cargo.lock"),
    )
    .unwrap();
    cargo(&dir, &["build", "--offline"]).await;
    cargo(&dir, &["test", "--offline"]).await;

    // Not again into the same, now non-empty, directory.
    let output = micro_new(&["demo", "--dir", dir.to_str().unwrap()]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not empty"));
}

#[tokio::test]
async fn bad_names_are_usage_errors() {
    let parent = tempfile::tempdir().unwrap();
    for name in ["Demo", "1demo", "my service", "a-b", "type", "micro", "dé"] {
        let dir = parent.path().join("x");
        let output = micro_new(&[name, "--dir", dir.to_str().unwrap()]).await;
        let err = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{name:?}: {err}");
        assert!(err.contains(name), "the error names {name:?}: {err}");
        assert!(!dir.exists(), "nothing was created for {name:?}");
    }
}
