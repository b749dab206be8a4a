//! `micro new <name>`: scaffolds a service crate from the templates in `templates/`, with
//! the dependency versions of the workspace this `micro` was built from.

use std::path::{Path, PathBuf};

use crate::tool::{ToolError, outln};

/// Flags of `micro new`.
#[derive(Debug, clap::Args)]
pub(crate) struct NewArgs {
    /// The crate's name, also the service's registered name and (with `_` for `-`) its
    /// proto package: lowercase letters, digits, `-` and `_`, starting with a letter
    name: String,
    /// Directory to create the crate in; it must not exist or be empty [default: ./NAME]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// A micro checkout to depend on by path (for offline builds and micro's own
    /// development), instead of the crates.io versions
    #[arg(long, value_name = "PATH")]
    micro_path: Option<PathBuf>,
}

/// How `micro new` works, for `--help`.
pub(crate) const LONG_ABOUT: &str = "\
Creates a service crate: Cargo.toml (micro, tonic, prost, tokio at the versions this micro
was built with; build-dependency micro-codegen), proto/<name>/v1/<name>.proto (a service
with a unary and a server-streaming method), build.rs, src/lib.rs (the handlers),
src/main.rs (runs the service), tests/ (an in-process test), README.md and .gitignore.

Then: cd <dir> && cargo test && cargo run, and in another terminal
micro call <name> <Service>.Hello '{\"name\": \"Alice\"}'.";

/// The workspace manifest this binary was built from: its dependency versions go into
/// the new crate's Cargo.toml.
const WORKSPACE_MANIFEST: &str = include_str!("../../Cargo.toml");

/// The template files and where they go; `{{crate}}` in a path is replaced too.
const TEMPLATES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("templates/Cargo.toml.tmpl")),
    ("build.rs", include_str!("templates/build.rs.tmpl")),
    (
        "proto/{{crate}}/v1/{{crate}}.proto",
        include_str!("templates/service.proto.tmpl"),
    ),
    ("src/lib.rs", include_str!("templates/lib.rs.tmpl")),
    ("src/main.rs", include_str!("templates/main.rs.tmpl")),
    ("tests/{{crate}}.rs", include_str!("templates/test.rs.tmpl")),
    ("README.md", include_str!("templates/README.md.tmpl")),
    (".gitignore", include_str!("templates/gitignore.tmpl")),
];

/// The workspace dependencies whose versions the templates use, and their placeholders.
const VERSIONED: &[(&str, &str)] = &[
    ("prost", "v_prost"),
    ("tokio", "v_tokio"),
    ("tokio-stream", "v_tokio_stream"),
    ("tonic", "v_tonic"),
    ("tonic-prost", "v_tonic_prost"),
    ("tracing-subscriber", "v_tracing_subscriber"),
];

/// Names that would clash with Rust, a dependency or the generated code.
const RESERVED: &[&str] = &[
    "micro",
    "micro_codegen",
    "prost",
    "tokio",
    "tokio_stream",
    "tonic",
    "tonic_prost",
    "tracing_subscriber",
    "std",
    "core",
    "alloc",
    "proc_macro",
    "test",
    "build",
    "pb",
    "hello_request",
    "hello_reply",
    "count_request",
    "count_reply",
    "as",
    "async",
    "await",
    "break",
    "const",
    "continue",
    "crate",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "struct",
    "super",
    "trait",
    "true",
    "type",
    "unsafe",
    "use",
    "where",
    "while",
    "abstract",
    "become",
    "box",
    "do",
    "final",
    "macro",
    "override",
    "priv",
    "try",
    "typeof",
    "unsized",
    "virtual",
    "yield",
];

/// Longest name accepted.
const MAX_NAME_LEN: usize = 64;

/// `micro new`.
pub(crate) fn run(args: &NewArgs) -> Result<(), ToolError> {
    let snake = validate_name(&args.name).map_err(ToolError::Usage)?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    check_empty(&dir)?;
    let values = values(&args.name, &snake, args.micro_path.as_deref())?;
    for (path, template) in TEMPLATES {
        let path = dir.join(render(path, &values));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|err| {
                ToolError::Failed(format!("cannot create {}: {err}", parent.display()))
            })?;
        }
        std::fs::write(&path, render(template, &values))
            .map_err(|err| ToolError::Failed(format!("cannot write {}: {err}", path.display())))?;
    }
    let service = pascal(&snake);
    outln!("created {} in {}", args.name, dir.display());
    outln!();
    outln!("  cd {}", dir.display());
    outln!("  cargo test");
    outln!("  cargo run");
    outln!(
        "  micro call {} {service}.Hello '{{\"name\": \"Alice\"}}'   # in another terminal",
        args.name
    );
    Ok(())
}

/// The name's snake form (`-` as `_`), or why it cannot be used.
fn validate_name(name: &str) -> Result<String, String> {
    let rule = "use lowercase letters, digits, `-` and `_`, starting with a letter, in parts \
                of at least two characters when there are several (my-service, orders2)";
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "name {name:?}: must be 1 to {MAX_NAME_LEN} characters; {rule}"
        ));
    }
    let parts: Vec<&str> = name.split(['-', '_']).collect();
    for part in &parts {
        let mut chars = part.chars();
        let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        if !starts_with_letter
            || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            || (parts.len() > 1 && part.len() < 2)
        {
            return Err(format!(
                "name {name:?} is not a valid crate name and proto package; {rule}"
            ));
        }
    }
    let snake = parts.join("_");
    if RESERVED.contains(&snake.as_str()) {
        return Err(format!(
            "name {name:?} is reserved (a Rust keyword, a dependency or a generated name); \
             choose another"
        ));
    }
    Ok(snake)
}

/// `my_service` → `MyService`.
fn pascal(snake: &str) -> String {
    snake
        .split('_')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

/// Refuses a directory that exists and is not empty.
fn check_empty(dir: &Path) -> Result<(), ToolError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ToolError::Usage(format!(
                    "{} exists and is not empty; choose another --dir",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(ToolError::Usage(format!(
            "cannot use {} as the crate's directory: {err}",
            dir.display()
        ))),
    }
}

/// The placeholders' values.
fn values(
    name: &str,
    snake: &str,
    micro_path: Option<&Path>,
) -> Result<Vec<(&'static str, String)>, ToolError> {
    let manifest: toml::Table = WORKSPACE_MANIFEST
        .parse()
        .map_err(|err| ToolError::Failed(format!("the built-in workspace manifest: {err}")))?;
    let workspace = manifest.get("workspace");
    let dependencies = workspace.and_then(|w| w.get("dependencies"));
    let micro_version = workspace
        .and_then(|w| w.get("package"))
        .and_then(|p| p.get("version"))
        .and_then(toml::Value::as_str)
        .unwrap_or(env!("CARGO_PKG_VERSION"))
        .to_owned();

    let mut values = vec![
        ("name", name.to_owned()),
        ("crate", snake.to_owned()),
        ("service_mod", snake.to_owned()),
        ("Service", pascal(snake)),
    ];
    for (dependency, key) in VERSIONED {
        let version = dependencies
            .and_then(|d| d.get(*dependency))
            .and_then(|d| d.as_str().or_else(|| d.get("version")?.as_str()))
            .ok_or_else(|| {
                ToolError::Failed(format!(
                    "the built-in workspace manifest has no version of {dependency}"
                ))
            })?;
        values.push((key, version.to_owned()));
    }
    match micro_path {
        Some(path) => {
            let path = std::path::absolute(path).map_err(|err| {
                ToolError::Usage(format!("--micro-path {}: {err}", path.display()))
            })?;
            if !path.join("micro-codegen").join("Cargo.toml").is_file() {
                return Err(ToolError::Usage(format!(
                    "--micro-path {}: not a micro checkout (no micro-codegen/Cargo.toml)",
                    path.display()
                )));
            }
            let dependency = |path: &Path| {
                let path = toml::Value::String(path.display().to_string());
                format!("{{ path = {path} }}")
            };
            values.push(("dep_micro", dependency(&path)));
            values.push(("dep_micro_codegen", dependency(&path.join("micro-codegen"))));
        }
        None => {
            values.push(("dep_micro", format!("\"{micro_version}\"")));
            values.push(("dep_micro_codegen", format!("\"{micro_version}\"")));
        }
    }
    Ok(values)
}

/// Replaces each `{{key}}` of `template` with its value.
fn render(template: &str, values: &[(&str, String)]) -> String {
    let mut text = template.to_owned();
    for (key, value) in values {
        text = text.replace(&format!("{{{{{key}}}}}"), value);
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn names() {
        assert_eq!(validate_name("demo").unwrap(), "demo");
        assert_eq!(validate_name("my-service2").unwrap(), "my_service2");
        assert_eq!(pascal("my_service2"), "MyService2");
        for bad in [
            "", "Demo", "1demo", "de mo", "a-b", "demo-", "-demo", "dé", "micro", "type", "a__b",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn every_placeholder_is_filled() {
        let values = values("my-demo", "my_demo", None).unwrap();
        for (path, template) in TEMPLATES {
            let text = render(template, &values);
            assert!(!has_placeholder(&text), "{path} keeps a placeholder");
            assert!(!render(path, &values).contains('{'), "{path}");
        }
    }

    fn has_placeholder(text: &str) -> bool {
        text.match_indices("{{").any(|(at, _)| {
            text[at + 2..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic())
                && text[at + 2..]
                    .split("}}")
                    .next()
                    .is_some_and(|key| key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        })
    }
}
