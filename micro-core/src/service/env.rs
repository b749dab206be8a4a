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
    duration_value(var, value).map(Some)
}

/// `value`, the text of `var`, read with [`crate::duration::parse`].
fn duration_value(var: &'static str, value: String) -> Result<Duration, ServiceError> {
    crate::duration::parse(&value).map_err(|err| ServiceError::InvalidEnv {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// `MICRO_REGISTER_TTL=1h` and a `1h` in a config file are both an hour (the `micro` CLI's
    /// `--ttl 1h` is tested in micro-cli's tests/platform_cli.rs): one parser reads all three.
    #[tokio::test]
    async fn one_hour_reads_the_same_from_the_environment_and_config() {
        let hour = Duration::from_secs(3600);
        assert_eq!(
            duration_value(REGISTER_TTL_ENV, "1h".to_owned()).unwrap(),
            hour
        );
        assert_eq!(
            duration_value(REGISTER_TTL_ENV, "1d".to_owned()).unwrap(),
            hour * 24
        );
        let err = duration_value(REGISTER_TTL_ENV, "3w".to_owned()).unwrap_err();
        let err = err.to_string();
        assert!(
            err.contains(REGISTER_TTL_ENV) && err.contains("unknown unit \"w\""),
            "{err}"
        );

        #[cfg(feature = "config")]
        {
            #[derive(serde::Deserialize)]
            struct Registration {
                #[serde(deserialize_with = "crate::duration::deserialize")]
                ttl: Duration,
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("service.toml");
            std::fs::write(&path, "[registration]\nttl = \"1h\"\n").unwrap();
            let config = crate::config::Config::builder()
                .file(&path)
                .build()
                .await
                .unwrap();
            let registration: Registration = config.get("registration").unwrap();
            assert_eq!(registration.ttl, hour);
        }
    }
}
