//! Environment overrides for what the code leaves unset.

use std::time::Duration;

use super::ServiceError;

/// The address to listen on, for example `0.0.0.0:9090` or `unix:/run/greeter.sock`.
pub const SERVER_ADDRESS_ENV: &str = "MICRO_SERVER_ADDRESS";
/// The address to register instead of the bound one (containers, NAT).
pub const SERVER_ADVERTISE_ENV: &str = "MICRO_SERVER_ADVERTISE";
/// The registration TTL: `30s`, `500ms`, `2m`, or plain seconds.
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
    parse_duration(&value)
        .map(Some)
        .map_err(|reason| ServiceError::InvalidEnv { var, value, reason })
}

/// `Some(None)` for `off`, `Some(Some(bytes))` for a size, `None` when unset.
pub(super) fn budget(var: &'static str) -> Result<Option<Option<usize>>, ServiceError> {
    let Some(value) = string(var)? else {
        return Ok(None);
    };
    if value.eq_ignore_ascii_case("off") {
        return Ok(Some(None));
    }
    parse_size(&value)
        .map(|bytes| Some(Some(bytes)))
        .map_err(|reason| ServiceError::InvalidEnv { var, value, reason })
}

/// Parses `65536`, `64K`, `64M`, `1G` (powers of 1024): a positive size.
fn parse_size(value: &str) -> Result<usize, String> {
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let amount: usize = digits
        .parse()
        .map_err(|_| "expected a whole number of bytes, or with K, M or G (e.g. 64M)".to_owned())?;
    let factor: usize = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        other => return Err(format!("unknown unit {other:?}: use K, M or G")),
    };
    match amount.checked_mul(factor) {
        Some(0) => Err("must be greater than zero (or off)".to_owned()),
        Some(bytes) => Ok(bytes),
        None => Err("too large".to_owned()),
    }
}

/// Parses `1500ms`, `30s`, `2m`, `1h` or plain seconds (`30`).
pub(crate) fn parse_duration(value: &str) -> Result<Duration, String> {
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let amount: u64 = digits
        .parse()
        .map_err(|_| "expected a whole number with a unit: ms, s, m or h (e.g. 30s)".to_owned())?;
    let duration = match unit {
        "" | "s" => Duration::from_secs(amount),
        "ms" => Duration::from_millis(amount),
        "m" => Duration::from_secs(amount.saturating_mul(60)),
        "h" => Duration::from_secs(amount.saturating_mul(3600)),
        other => return Err(format!("unknown unit {other:?}: use ms, s, m or h")),
    };
    if duration.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3d").unwrap_err().contains("\"d\""));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("0").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
        assert!(parse_size("3T").unwrap_err().contains("\"T\""));
    }
}
