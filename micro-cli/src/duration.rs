//! Durations on the command line: every `DURATION` flag (`--timeout`, `--ttl`,
//! `bench --duration`, `api --header-read-timeout`, …) parses with
//! [`micro_core::duration::parse`], the same parser as environment variables, configuration
//! and the gateway's `x-micro-timeout` header.

use std::time::Duration;

/// [`micro_core::duration::parse`] as a clap value parser: `500ms`, `10s`, `1.5s`, `2m`,
/// `1h`, `2d`, `1h30m`, or plain seconds (`30`). A bad value is a usage error (exit code 2)
/// whose message is the [`micro_core::duration::DurationError`] text.
///
/// # Errors
///
/// The [`micro_core::duration::DurationError`] naming the text and what is wrong with it.
pub(crate) fn parse(text: &str) -> Result<Duration, micro_core::duration::DurationError> {
    micro_core::duration::parse(text)
}

#[cfg(test)]
mod tests {
    use micro_core::duration::MAX;

    use super::*;

    #[test]
    fn units_and_combinations() {
        let cases = [
            ("500ms", Duration::from_millis(500)),
            ("10s", Duration::from_secs(10)),
            ("30", Duration::from_secs(30)),
            (" 2m ", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("1d", Duration::from_secs(86_400)),
            ("1µs", Duration::from_micros(1)),
            ("1h30m", Duration::from_secs(5400)),
            ("1m30s250ms", Duration::from_millis(90_250)),
            ("1.5s", Duration::from_millis(1500)),
            (".5s", Duration::from_millis(500)),
            ("0.25h", Duration::from_secs(900)),
            ("1.0000000001s", Duration::new(1, 0)),
            ("0.000001ms", Duration::from_nanos(1)),
            ("36500d", MAX),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn errors_name_the_text_and_never_panic() {
        for text in [
            "18446744073709551615s",
            "18446744073709551615m",
            "18446744073709551615ms",
            "18446744073709551615h",
            "99999999999999999999999999999999999999999999h",
            "36501d",
            "36500d1ms",
            "1e9s",
            "0",
            "0s",
            "0.0000000001s",
            "",
            " ",
            "s",
            "ms",
            ".",
            ".s",
            "1..5s",
            "-1s",
            "+1s",
            "3w",
            "1h30",
            "1 h",
            "NaNs",
            "infs",
            "١s",
        ] {
            let err = parse(text).expect_err(text);
            assert!(!err.to_string().is_empty(), "{text}");
        }
        assert!(parse("3w").unwrap_err().to_string().contains("\"w\""));
        assert!(
            parse("18446744073709551615s")
                .unwrap_err()
                .to_string()
                .contains("too long")
        );
        assert!(parse("0s").unwrap_err().to_string().contains("positive"));
    }
}
