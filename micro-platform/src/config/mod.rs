//! The config service: configuration values per environment over gRPC
//! (`micro.config.v1.Config`, from `proto/micro/config/v1/config.proto`).
//!
//! - [`ConfigService`] keeps the values in any [`SharedStore`](micro_core::store::SharedStore):
//!   database [`DATABASE`], one table per environment, one record per path (the key is the
//!   dot path, the value the YAML/JSON text as written). Values are parsed before they are
//!   written: text that does not parse is INVALID_ARGUMENT naming the path and the parser's
//!   error, and nothing is written. Writes go through the service, which notifies its
//!   `Watch` streams.
//! - [`ConfigClient`] calls it, and is a [`Source`](micro_core::config::Source): `load` is
//!   the environment's tree, `changes` its `Watch` stream (opened again with backoff when it
//!   breaks, each opening followed by one reload), so
//!   `Config::builder().source(ConfigClient::connect(addr, "prod")?)` reads from the service
//!   and follows its changes.

mod client;
mod server;

pub use client::ConfigClient;
pub use server::ConfigService;

use std::time::Duration;

/// The name the config service registers as, and [`ConfigClient::from_client`] resolves.
pub const SERVICE_NAME: &str = "micro.config";

/// The store database holding the values; the table is the environment.
pub const DATABASE: &str = "config";

/// How long one `Watch` call may stream before the client opens it again.
pub const WATCH_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Parses a value's text (YAML, of which JSON is a subset); empty text is null.
fn parse_value(text: &str) -> Result<serde_json::Value, String> {
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    yaml_serde::from_str::<serde_json::Value>(text).map_err(|error| error.to_string())
}

/// Checks a path: 1 to 512 bytes, dot-separated non-empty segments, no control characters.
fn validate_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > micro_core::store::MAX_KEY_LEN {
        return Err(format!(
            "path must be 1 to {} bytes, got {}",
            micro_core::store::MAX_KEY_LEN,
            path.len()
        ));
    }
    if path.chars().any(char::is_control) {
        return Err(format!("path {path:?} contains a control character"));
    }
    if path.split('.').any(str::is_empty) {
        return Err(format!("path {path:?} has an empty segment"));
    }
    Ok(())
}
