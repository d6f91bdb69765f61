//! The one parser of the duration and backoff texts `runall` accepts, shared by
//! `#[derive(Job)]` (which checks them at compile time) and `queue-core` (`job.toml`, the
//! command line): the same texts are accepted everywhere and give the same values.
//!
//! ```
//! use std::time::Duration;
//! use queue_time::{parse_backoff, parse_duration, BackoffSpec};
//!
//! assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
//! assert_eq!(parse_duration("12"), Ok(Duration::from_secs(12)));
//! assert_eq!(
//!     parse_backoff("1s,10s"),
//!     Ok(BackoffSpec::List(vec![Duration::from_secs(1), Duration::from_secs(10)]))
//! );
//! ```

use std::time::Duration;

/// A parsed backoff, before it becomes `queue_core::Backoff`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackoffSpec {
    /// The same wait every time.
    Fixed(Duration),
    /// Doubling from `base`, capped at `max`.
    Exponential {
        /// The first wait.
        base: Duration,
        /// The longest wait (ten minutes, or `base` if longer).
        max: Duration,
    },
    /// One wait per attempt; the last repeats.
    List(Vec<Duration>),
}

/// Parses a backoff: `exponential`, `exponential:<base>`, `fixed:<duration>`, a duration
/// (fixed) or a comma-separated list of durations (one per attempt, the last repeats).
pub fn parse_backoff(text: &str) -> Result<BackoffSpec, String> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix("exponential") {
        let base = match rest.strip_prefix(':') {
            Some(d) => parse_duration(d)?,
            None if rest.is_empty() => Duration::from_secs(1),
            None => return Err(unknown_backoff(text)),
        };
        return Ok(BackoffSpec::Exponential {
            base,
            max: Duration::from_secs(600).max(base),
        });
    }
    if let Some(rest) = text.strip_prefix("fixed") {
        return match rest.strip_prefix(':') {
            Some(d) => Ok(BackoffSpec::Fixed(parse_duration(d)?)),
            None => Err("`fixed` needs a duration, as in `fixed:10s`".into()),
        };
    }
    // Not a keyword: a duration or a list of them. A word that is neither is better reported
    // as an unknown backoff than as a bad duration.
    if text.starts_with(|c: char| c.is_alphabetic()) {
        return Err(unknown_backoff(text));
    }
    let mut list = text
        .split(',')
        .map(parse_duration)
        .collect::<Result<Vec<_>, _>>()?;
    if list.len() == 1 {
        Ok(BackoffSpec::Fixed(list.remove(0)))
    } else {
        Ok(BackoffSpec::List(list))
    }
}

fn unknown_backoff(text: &str) -> String {
    format!(
        "unknown backoff `{text}`, expected `exponential`, `exponential:<base>`, \
         `fixed:<duration>`, a duration or a comma-separated list of durations"
    )
}

/// Parses a duration: a number and a unit (`500ms`, `30s`, `5m`, `2h`, `7d`), several run
/// together (`1m30s`), or a bare number of seconds. Too large a number is an error, never a
/// silent saturation.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration, expected a number and a unit, as in `30s`".into());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "bad duration `{text}`: expected a number, as in `30s`"
            ));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("bad duration `{text}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let Some(millis_per) = unit_millis(unit) else {
            let trimmed = unit.trim();
            return Err(
                if trimmed != unit && (trimmed.is_empty() || unit_millis(trimmed).is_some()) {
                    format!(
                        "bad duration `{text}`: spaces are not allowed, write `{}`",
                        text.split_whitespace().collect::<String>()
                    )
                } else if trimmed.is_empty() {
                    format!("bad duration `{text}`: missing unit (ms, s, m, h or d)")
                } else {
                    format!(
                        "bad duration `{text}`: unknown unit `{trimmed}` (use ms, s, m, h or d)"
                    )
                },
            );
        };
        total = total
            .checked_add(Duration::from_millis(number.saturating_mul(millis_per)))
            .ok_or_else(|| format!("bad duration `{text}`: number too large"))?;
    }
    Ok(total)
}

/// Milliseconds in one `unit`.
fn unit_millis(unit: &str) -> Option<u64> {
    Some(match unit {
        "ms" => 1,
        "s" | "sec" | "secs" => 1_000,
        "m" | "min" | "mins" => 60_000,
        "h" | "hour" | "hours" => 3_600_000,
        "d" | "day" | "days" => 86_400_000,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = |t: &str| parse_duration(t).unwrap();
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("1m30s"), Duration::from_secs(90));
        assert_eq!(ok("7d"), Duration::from_secs(7 * 86400));
        assert_eq!(ok("12"), Duration::from_secs(12));
        assert_eq!(ok(" 2h "), Duration::from_secs(7200));
        assert_eq!(ok("1hour5mins"), Duration::from_secs(3900));
        assert_eq!(ok("+5"), Duration::from_secs(5));
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("18446744073709551615"), Duration::from_secs(u64::MAX));
        for bad in [
            "",
            "  ",
            "3 weeks",
            "s",
            "10x",
            "1m 30s",
            "1.5s",
            "-1s",
            "30 parsecs",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_duration("30 parsecs").unwrap_err(),
            "bad duration `30 parsecs`: unknown unit `parsecs` (use ms, s, m, h or d)"
        );
        assert_eq!(
            parse_duration("1m 30s").unwrap_err(),
            "bad duration `1m 30s`: spaces are not allowed, write `1m30s`"
        );
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(
            parse_duration("10s5").unwrap_err(),
            "bad duration `10s5`: missing unit (ms, s, m, h or d)"
        );
        assert_eq!(
            parse_duration("30parsecs").unwrap_err(),
            "bad duration `30parsecs`: unknown unit `parsecs` (use ms, s, m, h or d)"
        );
        assert!(parse_duration("99999999999999999999s")
            .unwrap_err()
            .contains("number too large"));
    }

    #[test]
    fn backoffs() {
        let s = Duration::from_secs;
        assert_eq!(
            parse_backoff("exponential"),
            Ok(BackoffSpec::Exponential {
                base: s(1),
                max: s(600)
            })
        );
        assert_eq!(
            parse_backoff("exponential:2s"),
            Ok(BackoffSpec::Exponential {
                base: s(2),
                max: s(600)
            })
        );
        assert_eq!(
            parse_backoff("exponential:1h"),
            Ok(BackoffSpec::Exponential {
                base: s(3600),
                max: s(3600)
            })
        );
        assert_eq!(parse_backoff("fixed:10s"), Ok(BackoffSpec::Fixed(s(10))));
        assert_eq!(parse_backoff("5s"), Ok(BackoffSpec::Fixed(s(5))));
        assert_eq!(
            parse_backoff("1s, 5s,30s"),
            Ok(BackoffSpec::List(vec![s(1), s(5), s(30)]))
        );
        for bad in [
            "",
            "sometimes",
            "exponentially",
            "exponential:",
            "fixed",
            "fixed10s",
            "fixed:",
            "1s,",
            "1s,,2s",
            "1s,x",
        ] {
            assert!(parse_backoff(bad).is_err(), "{bad:?}");
        }
        assert!(parse_backoff("sometimes")
            .unwrap_err()
            .starts_with("unknown backoff `sometimes`"));
    }
}
