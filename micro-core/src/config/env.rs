//! [`EnvSource`]: configuration from environment variables.

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::{Changes, ConfigError, Source, merge};

/// The environment variables that start with `PREFIX_`: `PREFIX_DB__POOL=20` sets `db.pool`.
///
/// After the prefix, `__` separates levels and names are lowercased (a single `_` stays
/// part of the name: `PREFIX_LOG_LEVEL` is `log_level`). A value that parses as JSON
/// (`20`, `true`, `[1,2]`, `{"a":1}`) is taken as such, anything else as a string. Read once,
/// when the configuration is built.
#[derive(Debug, Clone)]
pub struct EnvSource {
    prefix: String,
    vars: Option<Vec<(String, String)>>,
}

impl EnvSource {
    /// The variables of this process starting with `prefix` and `_`.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: format!("{}_", prefix.trim_end_matches('_')),
            vars: None,
        }
    }

    /// The same, over the given variables instead of the process's (for tests).
    pub fn from_vars(prefix: &str, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            vars: Some(vars.into_iter().collect()),
            ..Self::new(prefix)
        }
    }

    fn tree(&self, vars: impl Iterator<Item = (String, String)>) -> Value {
        let mut root = Value::Object(Map::new());
        let mut sorted: Vec<(String, String)> = vars
            .filter(|(name, _)| name.starts_with(&self.prefix) && name.len() > self.prefix.len())
            .collect();
        // Shorter paths first, so `A__B=1` does not wipe `A__B__C=2` whatever the order.
        sorted.sort();
        for (name, raw) in sorted {
            let path: Vec<String> = name[self.prefix.len()..]
                .split("__")
                .map(str::to_lowercase)
                .collect();
            if path.iter().any(String::is_empty) {
                continue;
            }
            let value = serde_json::from_str(&raw).unwrap_or(Value::String(raw));
            merge::set(&mut root, &path, value);
        }
        root
    }
}

#[async_trait]
impl Source for EnvSource {
    fn name(&self) -> String {
        format!("environment {}*", self.prefix)
    }

    async fn load(&self) -> Result<Value, ConfigError> {
        Ok(match &self.vars {
            Some(vars) => self.tree(vars.iter().cloned()),
            None => self.tree(std::env::vars()),
        })
    }

    async fn changes(&self) -> Result<Option<Changes>, ConfigError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn maps_names_and_parses_values() {
        let source = EnvSource::from_vars(
            "APP",
            [
                ("APP_DB__POOL", "20"),
                ("APP_DB__HOST", "db.local"),
                ("APP_LOG_LEVEL", "debug"),
                ("APP_FLAGS", "[1, 2]"),
                ("APP_ON", "true"),
                ("OTHER_X", "1"),
                ("APP_", "ignored"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        assert_eq!(
            source.load().await.unwrap(),
            json!({"db": {"pool": 20, "host": "db.local"}, "log_level": "debug", "flags": [1, 2], "on": true})
        );
    }
}
