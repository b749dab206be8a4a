//! The rules of what may import what, between the workspace's crates (docs/ARCHITECTURE.md,
//! "Layers"): read from `cargo metadata`, so a forbidden dependency fails the suite the day
//! it is added, not the day someone notices the build graph grew.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::{collections::BTreeMap, process::Command};

/// For each library crate, the workspace crates it may depend on (normal dependencies).
/// `micro-codegen` may be anyone's build dependency, and dev-dependencies are free: tests
/// may use anything. A workspace crate missing from this table fails the test, so a new
/// crate gets its rule when it is added.
const MAY_DEPEND_ON: &[(&str, &[&str])] = &[
    // The runtime knows no engine, no platform service, no gateway, no binary.
    ("micro-core", &[]),
    ("micro-codegen", &[]),
    // Engines build on the runtime only: no platform service.
    ("micro-plugins", &["micro-core"]),
    // Platform services build on the runtime; they get engines through its traits.
    ("micro-platform", &["micro-core"]),
    // The gateway sits on top of the runtime and the platform's clients.
    ("micro-api", &["micro-core", "micro-platform"]),
    // The facade re-exports libraries, never the CLI.
    (
        "micro",
        &["micro-core", "micro-plugins", "micro-platform", "micro-api"],
    ),
    // The CLI is the top: every library, no test crate.
    (
        "micro-cli",
        &[
            "micro",
            "micro-core",
            "micro-plugins",
            "micro-platform",
            "micro-api",
        ],
    ),
    // Test support: never a dependency of the libraries above (they do not list it).
    (
        "micro-testkit",
        &["micro", "micro-core", "micro-test-engines"],
    ),
    ("micro-test-engines", &[]),
];

fn workspace() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

#[test]
fn crates_depend_only_on_the_layers_below() {
    let metadata = workspace();
    let packages = metadata["packages"].as_array().unwrap();
    let members: Vec<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let rules: BTreeMap<&str, &[&str]> = MAY_DEPEND_ON.iter().copied().collect();
    let mut broken = Vec::new();
    for package in packages {
        let name = package["name"].as_str().unwrap();
        let Some(allowed) = rules.get(name) else {
            broken.push(format!(
                "{name} has no rule in MAY_DEPEND_ON (tests/layering.rs)"
            ));
            continue;
        };
        for dependency in package["dependencies"].as_array().unwrap() {
            let target = dependency["name"].as_str().unwrap();
            if !members.contains(&target) {
                continue;
            }
            let allowed_here = match dependency["kind"].as_str() {
                Some("dev") => true,
                Some("build") => target == "micro-codegen" || allowed.contains(&target),
                _ => allowed.contains(&target),
            };
            if !allowed_here {
                broken.push(format!(
                    "{name} depends on {target} ({} dependency)",
                    dependency["kind"].as_str().unwrap_or("normal")
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "forbidden dependencies between workspace crates:\n  {}",
        broken.join("\n  ")
    );
}

#[test]
fn no_library_lists_a_test_crate_as_a_normal_dependency() {
    // Stated separately because the table above would allow it by accident if someone
    // added a test crate to a library's list.
    let metadata = workspace();
    for package in metadata["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap();
        if name.starts_with("micro-test") {
            continue;
        }
        for dependency in package["dependencies"].as_array().unwrap() {
            let target = dependency["name"].as_str().unwrap();
            let normal = dependency["kind"].is_null();
            assert!(
                !(normal && target.starts_with("micro-test")),
                "{name} depends on the test crate {target}"
            );
        }
    }
}
