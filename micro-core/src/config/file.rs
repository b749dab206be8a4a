//! [`FileSource`]: configuration from a YAML, JSON or TOML file, watched for changes.

use std::{
    path::{Path, PathBuf},
    pin::Pin,
    task::{Context, Poll},
};

use async_trait::async_trait;
use futures_core::Stream;
use notify::{RecursiveMode, Watcher as _};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::{Changes, ConfigError, Source};

/// A file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `.yaml`, `.yml`
    Yaml,
    /// `.json`
    Json,
    /// `.toml`
    Toml,
}

/// A configuration file. Its format comes from the extension (`.yaml`/`.yml`, `.json`,
/// `.toml`; anything else is read as YAML, of which JSON is a subset). The top level must be
/// a mapping; an empty file is an empty mapping.
///
/// Changes are watched through the file's directory, so editors that replace the file
/// (write a new one, rename it over) are seen too.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
    format: Format,
    required: bool,
}

impl Format {
    /// The format of `path` by its extension.
    pub fn of(path: &Path) -> Self {
        match path.extension().and_then(|ext| ext.to_str()) {
            Some("json") => Self::Json,
            Some("toml") => Self::Toml,
            _ => Self::Yaml,
        }
    }

    /// Parses `text` into a tree.
    ///
    /// # Errors
    /// The parser's message, with line and column where it gives them.
    pub fn parse(self, text: &str) -> Result<Value, String> {
        if text.trim().is_empty() {
            return Ok(Value::Object(Map::new()));
        }
        let value = match self {
            Self::Yaml => yaml_serde::from_str::<Value>(text).map_err(|e| e.to_string())?,
            Self::Json => serde_json::from_str::<Value>(text).map_err(|e| e.to_string())?,
            Self::Toml => toml::from_str::<Value>(text).map_err(|e| e.to_string())?,
        };
        match value {
            Value::Object(_) => Ok(value),
            Value::Null => Ok(Value::Object(Map::new())),
            other => Err(format!(
                "the top level must be a mapping of names to values, not {}",
                kind(&other)
            )),
        }
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

impl FileSource {
    /// The file at `path`; it must exist (see [`required`](Self::required)).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        Self {
            format: Format::of(&path),
            path,
            required: true,
        }
    }

    /// Whether a missing file is an error (`true`, the default) or an empty mapping.
    #[must_use]
    pub fn required(mut self, required: bool) -> Self {
        self.required = required;
        self
    }

    /// `name.<environment>.ext` next to `name.ext`, if `path` has a file name.
    pub fn environment_overlay(path: &Path, environment: &str) -> Option<PathBuf> {
        let stem = path.file_stem()?.to_str()?;
        let name = match path.extension().and_then(|ext| ext.to_str()) {
            Some(ext) => format!("{stem}.{environment}.{ext}"),
            None => format!("{stem}.{environment}"),
        };
        Some(path.with_file_name(name))
    }
}

#[async_trait]
impl Source for FileSource {
    fn name(&self) -> String {
        format!("file {}", self.path.display())
    }

    async fn load(&self) -> Result<Value, ConfigError> {
        let text = match tokio::fs::read_to_string(&self.path).await {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && !self.required => {
                return Ok(Value::Object(Map::new()));
            }
            Err(error) => {
                return Err(ConfigError::Unavailable {
                    source_name: self.name(),
                    message: error.to_string(),
                });
            }
        };
        self.format
            .parse(&text)
            .map_err(|message| ConfigError::Malformed {
                source_name: self.name(),
                message,
            })
    }

    async fn changes(&self) -> Result<Option<Changes>, ConfigError> {
        let unavailable = |message: String| ConfigError::Unavailable {
            source_name: self.name(),
            message,
        };
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let Some(name) = self.path.file_name().map(ToOwned::to_owned) else {
            return Err(unavailable("the path names no file".to_owned()));
        };
        // One slot is enough: a reload reads the file as it is by then.
        let (sender, receiver) = mpsc::channel(1);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                let relevant = match &event {
                    Ok(event) => event
                        .paths
                        .iter()
                        .any(|path| path.file_name() == Some(&name)),
                    // Lost events: reload to be safe.
                    Err(_) => true,
                };
                if relevant {
                    let _ = sender.try_send(());
                }
            })
            .map_err(|error| unavailable(format!("cannot watch: {error}")))?;
        watcher
            .watch(&dir, RecursiveMode::NonRecursive)
            .map_err(|error| unavailable(format!("cannot watch {}: {error}", dir.display())))?;
        Ok(Some(Box::pin(FileChanges {
            receiver,
            _watcher: watcher,
        })))
    }
}

/// The change stream of a file: holds the watcher for as long as it is read.
struct FileChanges {
    receiver: mpsc::Receiver<()>,
    _watcher: notify::RecommendedWatcher,
}

impl Stream for FileChanges {
    type Item = ();

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<()>> {
        self.receiver.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_each_format_and_names_errors() {
        assert_eq!(
            Format::Yaml.parse("db:\n  pool: 5\n").unwrap(),
            json!({"db": {"pool": 5}})
        );
        assert_eq!(
            Format::Json.parse(r#"{"db": {"pool": 5}}"#).unwrap(),
            json!({"db": {"pool": 5}})
        );
        assert_eq!(
            Format::Toml.parse("[db]\npool = 5\n").unwrap(),
            json!({"db": {"pool": 5}})
        );
        assert_eq!(Format::Yaml.parse("").unwrap(), json!({}));
        let error = Format::Yaml.parse("db: [unclosed\n").unwrap_err();
        assert!(error.contains("line"), "{error}");
        let error = Format::Json.parse("{\"a\": }").unwrap_err();
        assert!(error.contains("line 1"), "{error}");
        assert!(
            Format::Yaml
                .parse("- a\n- b\n")
                .unwrap_err()
                .contains("a list")
        );
    }

    #[test]
    fn overlay_names() {
        assert_eq!(
            FileSource::environment_overlay(Path::new("/etc/app/config.yaml"), "prod"),
            Some(PathBuf::from("/etc/app/config.prod.yaml"))
        );
        assert_eq!(
            FileSource::environment_overlay(Path::new("config"), "dev"),
            Some(PathBuf::from("config.dev"))
        );
    }
}
