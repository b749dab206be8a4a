//! Environment overrides for what the code leaves unset.

use std::time::Duration;

use super::ServiceError;

/// The address to listen on, for example `0.0.0.0:9090` or `unix:/run/greeter.sock`.
pub const SERVER_ADDRESS_ENV: &str = "MICRO_SERVER_ADDRESS";
/// The address to register instead of the bound one (containers, NAT).
pub const SERVER_ADVERTISE_ENV: &str = "MICRO_SERVER_ADVERTISE";
/// The registration TTL: `30s`, `500ms`, `2m`, `1h`, or plain seconds; see [`crate::duration`].
pub const REGISTER_TTL_ENV: &str = "MICRO_REGISTER_TTL";
/// The re-registration interval, in the same format as the TTL.
pub const REGISTER_INTERVAL_ENV: &str = "MICRO_REGISTER_INTERVAL";

/// The budget for large request messages: bytes (`67108864`, `64M`, `1G`) or `off`.
pub const MESSAGE_BUDGET_ENV: &str = "MICRO_MESSAGE_BUDGET";

pub(super) fn string(var: &'static str) -> Result<Option<String>, ServiceError> {
    match std::env::var(var) {
        Ok(value) if value.trim().is_empty() => Ok(None),
        Ok(value) => Ok(Some(value.trim().to_owned())),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(value)) => Err(ServiceError::InvalidEnv {
            var,
            value: value.to_string_lossy().into_owned(),
            reason: "not valid UTF-8".to_owned(),
        }),
    }
}

pub(super) fn duration(var: &'static str) -> Result<Option<Duration>, ServiceError> {
    let Some(value) = string(var)? else {
        return Ok(None);
    };
    crate::duration::parse(&value)
        .map(Some)
        .map_err(|err| ServiceError::InvalidEnv {
            var,
            value,
            reason: err.to_string(),
        })
}

/// `Some(None)` for `off`, `Some(Some(bytes))` for a size, `None` when unset.
pub(super) fn budget(var: &'static str) -> Result<Option<Option<usize>>, ServiceError> {
    let Some(value) = string(var)? else {
        return Ok(None);
    };
    if value.eq_ignore_ascii_case("off") {
        return Ok(Some(None));
    }
    crate::size::parse(&value)
        .map(|bytes| Some(Some(bytes)))
        .map_err(|err| ServiceError::InvalidEnv {
            var,
            value,
            reason: err.to_string(),
        })
}
