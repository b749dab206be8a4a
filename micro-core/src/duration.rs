//! Durations written by people: `500ms`, `30s`, `2m`, `1h`, `2d`, `1h30m`, `1.5s`.
//!
//! One parser for every duration micro reads from text: environment variables
//! (`MICRO_REGISTER_TTL`, `MICRO_TLS_RELOAD`, …), command-line flags, configuration values
//! (with [`deserialize`]) and the gateway's `x-micro-timeout` header.
//!
//! | unit | meaning |
//! |---|---|
//! | `ns` | nanoseconds |
//! | `us`, `µs` | microseconds |
//! | `ms` | milliseconds |
//! | `s` | seconds |
//! | `m` | minutes |
//! | `h` | hours |
//! | `d` | days (24 hours) |
//!
//! Numbers are whole (`90s`) or decimal (`1.5s`, `.5h`); parts add up (`1h30m`, `1m30s250ms`);
//! a number alone is seconds (`30`). The result is exact (no floating point), positive and
//! at most [`MAX`].
//!
//! ```
//! use std::time::Duration;
//!
//! assert_eq!(micro_core::duration::parse("1h30m")?, Duration::from_secs(5400));
//! assert_eq!(micro_core::duration::parse("250ms")?, Duration::from_millis(250));
//! # Ok::<(), micro_core::duration::DurationError>(())
//! ```
//!
//! `humantime` parses a similar language; micro keeps its own because it is small, exact,
//! bounded, and its errors name the accepted units.

use std::{fmt, time::Duration};

/// The longest duration accepted: 100 years (36,500 days). Anything longer is a typo, and the
/// bound keeps `Instant::now() + duration` and the `grpc-timeout` encoding far from
/// overflowing.
pub const MAX: Duration = Duration::from_secs(36_500 * 24 * 3600);

/// The units [`parse`] accepts, as its errors list them.
pub const UNITS: &str = "ns, us (or µs), ms, s, m, h or d";

const EXAMPLES: &str = "such as 500ms, 10s, 2m, 1h, 2d or 1h30m";

/// Why a text is not a duration. Each variant names the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DurationError {
    /// The text is empty or only whitespace.
    #[error("an empty duration: use one {EXAMPLES}")]
    Empty,
    /// A part is not a number followed by a unit.
    #[error("{text:?} is not a duration {EXAMPLES}")]
    Invalid {
        /// The text, trimmed.
        text: String,
    },
    /// A unit is not one of [`UNITS`].
    #[error("{text:?}: unknown unit {unit:?}; use {UNITS}")]
    UnknownUnit {
        /// The text, trimmed.
        text: String,
        /// The unit that is not known.
        unit: String,
    },
    /// A number without a unit, after other parts (`1h30`): ambiguous.
    #[error("{text:?}: a number without a unit; use {UNITS}")]
    MissingUnit {
        /// The text, trimmed.
        text: String,
    },
    /// The duration is zero (or below a nanosecond).
    #[error("{text:?}: the duration must be positive")]
    Zero {
        /// The text, trimmed.
        text: String,
    },
    /// The duration is longer than [`MAX`].
    #[error("{text:?} is too long: at most 36500d (100 years)")]
    TooLong {
        /// The text, trimmed.
        text: String,
    },
}

/// Parses a positive duration of at most [`MAX`]: see the [module docs](self) for the
/// language. Surrounding whitespace is ignored. Never panics.
///
/// # Errors
///
/// A [`DurationError`] naming the text and what is wrong with it: empty, not a number, an
/// unknown or missing unit (listing the accepted ones), zero, or longer than [`MAX`].
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DurationError::Empty);
    }
    let text = || trimmed.to_owned();
    let mut rest = trimmed;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let per_unit = match unit {
            // A number alone is seconds, but only alone: `1h30` is ambiguous.
            "" if number_len == trimmed.len() => NANOS_PER_SECOND,
            "" => return Err(DurationError::MissingUnit { text: text() }),
            unit => nanos_per(unit).ok_or_else(|| DurationError::UnknownUnit {
                text: text(),
                unit: unit.to_owned(),
            })?,
        };
        let nanos = nanos(number, per_unit)
            .ok_or_else(|| DurationError::Invalid { text: text() })?
            .ok_or_else(|| DurationError::TooLong { text: text() })?;
        total = total
            .checked_add(nanos)
            .ok_or_else(|| DurationError::TooLong { text: text() })?;
        rest = after;
    }
    if total == 0 {
        return Err(DurationError::Zero { text: text() });
    }
    if total > MAX.as_nanos() {
        return Err(DurationError::TooLong { text: text() });
    }
    let secs = u64::try_from(total / NANOS_PER_SECOND)
        .map_err(|_| DurationError::TooLong { text: text() })?;
    // The remainder of a division by 10^9 fits in u32.
    let subsec = u32::try_from(total % NANOS_PER_SECOND)
        .map_err(|_| DurationError::TooLong { text: text() })?;
    Ok(Duration::new(secs, subsec))
}

/// Reads a duration with [`parse`] in a serde `Deserialize` implementation: a string such as
/// `"1h"`, or a whole number of seconds.
///
/// ```
/// use std::time::Duration;
///
/// #[derive(serde::Deserialize)]
/// struct Settings {
///     #[serde(deserialize_with = "micro_core::duration::deserialize")]
///     ttl: Duration,
/// }
///
/// let settings: Settings = serde_json::from_str(r#"{"ttl": "1h"}"#)?;
/// assert_eq!(settings.ttl, Duration::from_secs(3600));
/// # Ok::<(), serde_json::Error>(())
/// ```
///
/// # Errors
///
/// The deserializer's error, carrying the [`DurationError`]'s message.
pub fn deserialize<'de, D>(deserializer: D) -> Result<Duration, D::Error>
where
    D: serde::Deserializer<'de>,
{
    deserializer.deserialize_any(Visitor)
}

const NANOS_PER_SECOND: u128 = 1_000_000_000;

fn nanos_per(unit: &str) -> Option<u128> {
    Some(match unit {
        "d" => 24 * 3_600 * NANOS_PER_SECOND,
        "h" => 3_600 * NANOS_PER_SECOND,
        "m" => 60 * NANOS_PER_SECOND,
        "s" => NANOS_PER_SECOND,
        "ms" => 1_000_000,
        // U+00B5 MICRO SIGN and U+03BC GREEK SMALL LETTER MU look the same.
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ns" => 1,
        _ => return None,
    })
}

/// `number` (`12`, `1.5`, `.5`) times `per_unit` nanoseconds: `None` when it is not a
/// number, `Some(None)` when it overflows. Digits of the fraction finer than a nanosecond
/// are dropped.
fn nanos(number: &str, per_unit: u128) -> Option<Option<u128>> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty())
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let mut total: u128 = 0;
    for digit in whole.bytes() {
        let Some(next) = total
            .checked_mul(10)
            .and_then(|t| t.checked_add(u128::from(digit - b'0')))
        else {
            return Some(None);
        };
        total = next;
    }
    let Some(mut total) = total.checked_mul(per_unit) else {
        return Some(None);
    };
    // per_unit ≤ 8.64e13, so 14 digits of fraction reach below a nanosecond.
    let mut scale = per_unit;
    for digit in fraction.bytes().take(14) {
        scale /= 10;
        total = total.saturating_add(u128::from(digit - b'0') * scale);
    }
    Some(Some(total))
}

struct Visitor;

impl serde::de::Visitor<'_> for Visitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a duration {EXAMPLES}")
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Duration, E> {
        parse(value).map_err(E::custom)
    }

    fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Duration, E> {
        parse(&value.to_string()).map_err(E::custom)
    }

    fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Duration, E> {
        parse(&value.to_string()).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_combinations() {
        let cases = [
            ("1h", Duration::from_secs(3600)),
            ("90s", Duration::from_secs(90)),
            ("250ms", Duration::from_millis(250)),
            ("2d", Duration::from_secs(2 * 24 * 3600)),
            ("30", Duration::from_secs(30)),
            (" 2m ", Duration::from_secs(120)),
            ("100us", Duration::from_micros(100)),
            ("100\u{b5}s", Duration::from_micros(100)),
            ("100\u{3bc}s", Duration::from_micros(100)),
            ("7ns", Duration::from_nanos(7)),
            ("1h30m", Duration::from_secs(5400)),
            ("1d12h", Duration::from_secs(36 * 3600)),
            ("1m30s250ms", Duration::from_millis(90_250)),
            ("1.5s", Duration::from_millis(1500)),
            (".5s", Duration::from_millis(500)),
            ("0.25h", Duration::from_secs(900)),
            ("1.5d", Duration::from_secs(36 * 3600)),
            ("1.0000000001s", Duration::new(1, 0)),
            ("0.000001ms", Duration::from_nanos(1)),
            ("36500d", MAX),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn errors_name_the_text_and_the_accepted_units() {
        let unknown = parse("3w").unwrap_err();
        assert_eq!(
            unknown,
            DurationError::UnknownUnit {
                text: "3w".to_owned(),
                unit: "w".to_owned()
            }
        );
        let message = unknown.to_string();
        assert!(message.contains("\"w\""), "{message}");
        for unit in ["ns", "us", "ms", "s", "m", "h", "d"] {
            assert!(message.contains(unit), "{message} lacks {unit}");
        }
        assert!(matches!(
            parse("1h30"),
            Err(DurationError::MissingUnit { .. })
        ));
        assert!(matches!(parse("0s"), Err(DurationError::Zero { .. })));
        assert!(matches!(
            parse("fast"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(parse("1..5s"), Err(DurationError::Invalid { .. })));
        assert!(matches!(parse(" "), Err(DurationError::Empty)));
        assert!(matches!(
            parse("36500d1ns"),
            Err(DurationError::TooLong { .. })
        ));
    }

    #[test]
    fn never_panics() {
        for text in [
            "18446744073709551615s",
            "18446744073709551615d",
            "18446744073709551615ns",
            "99999999999999999999999999999999999999999999h",
            "1e9s",
            "0",
            "0.0000000001s",
            "s",
            "ms",
            ".",
            ".s",
            "1..5s",
            "-1s",
            "+1s",
            "1 h",
            "NaNs",
            "infs",
            "١s",
            "1µ",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn deserializes_strings_and_seconds() {
        #[derive(Debug, serde::Deserialize)]
        struct Settings {
            #[serde(deserialize_with = "deserialize")]
            ttl: Duration,
        }
        let parsed = |json: &str| serde_json::from_str::<Settings>(json).map(|s| s.ttl);
        assert_eq!(
            parsed(r#"{"ttl":"1h"}"#).ok(),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(parsed(r#"{"ttl":90}"#).ok(), Some(Duration::from_secs(90)));
        let err = parsed(r#"{"ttl":"1w"}"#).unwrap_err().to_string();
        assert!(err.contains("unknown unit \"w\""), "{err}");
    }
}
