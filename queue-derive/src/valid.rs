//! Checks the attribute values and turns them into a [`Model`] ready for expansion. Every
//! problem is pushed onto the error list, spanned on the literal at fault, and a usable value
//! is still returned so the fallback expansion has a name and a crate path.
//!
//! The duration and backoff parsers mirror `queue_core::parse_duration` and
//! `queue_core::Backoff::parse` (proc-macro crates cannot depend on `queue-core`): the same
//! texts are accepted and give the same values. Keep them in step.

use std::time::Duration;

use syn::{Ident, LitStr};

use crate::attr::{Attrs, Errors, Given};

/// A checked job definition.
pub(crate) struct Model {
    /// The path of `queue_core`: `::queue_core` unless `crate = "..."` says otherwise.
    pub(crate) krate: syn::Path,
    /// The job's name (given, or the type name in kebab-case).
    pub(crate) name: String,
    pub(crate) queue: Option<String>,
    pub(crate) tries: Option<u32>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) backoff: Option<Backoff>,
}

/// `queue_core::Backoff`, computed at compile time.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Backoff {
    Fixed(Duration),
    Exponential { base: Duration, max: Duration },
    List(Vec<Duration>),
}

/// What a job or queue name may contain, for the messages.
const NAME_CHARS: &str = "ASCII letters, digits, `-`, `_`, `.` and `:`";

/// Checks `attrs` for the type `ident`, pushing problems onto `errors`.
pub(crate) fn validate(ident: &Ident, attrs: Attrs, errors: &mut Errors) -> Model {
    let krate = match &attrs.krate {
        None => syn::parse_quote!(::queue_core),
        Some(Given { at, value: lit }) => match lit.parse::<syn::Path>() {
            Ok(path) => path,
            Err(_) => {
                errors.push(
                    *at,
                    error_at(
                        lit,
                        format!(
                            "bad crate path `{}`, expected a path such as `::queue_core`",
                            lit.value()
                        ),
                    ),
                );
                syn::parse_quote!(::queue_core)
            }
        },
    };

    let name = match &attrs.name {
        Some(Given { at, value: lit }) => {
            let name = lit.value();
            if let Err(msg) = check_name("name", &name) {
                errors.push(*at, error_at(lit, msg));
            }
            name
        }
        None => {
            let name = kebab_case(&syn::ext::IdentExt::unraw(ident).to_string());
            if check_name("name", &name).is_err() {
                errors.push(
                    Errors::AFTER_ATTRS,
                    syn::Error::new(
                        ident.span(),
                        format!(
                            "the type name gives the job name `{name}`, which may only \
                             contain {NAME_CHARS}; set one with #[job(name = \"...\")]"
                        ),
                    ),
                );
            }
            name
        }
    };

    let queue = attrs.queue.as_ref().map(|Given { at, value: lit }| {
        let queue = lit.value();
        if let Err(msg) = check_name("queue", &queue) {
            errors.push(*at, error_at(lit, msg));
        }
        queue
    });

    let tries = attrs.tries.as_ref().and_then(|Given { at, value: t }| {
        let at_least_one = || syn::Error::new_spanned(&t.tokens, "`tries` must be at least 1");
        if t.negative {
            errors.push(*at, at_least_one());
            return None;
        }
        match t.lit.base10_parse::<u32>() {
            Ok(0) => {
                errors.push(*at, at_least_one());
                None
            }
            Ok(n) => Some(n),
            Err(_) => {
                errors.push(
                    *at,
                    syn::Error::new_spanned(
                        &t.tokens,
                        format!("`tries` must be a whole number from 1 to {}", u32::MAX),
                    ),
                );
                None
            }
        }
    });

    let timeout =
        attrs.timeout.as_ref().and_then(|Given { at, value: lit }| {
            match parse_duration(&lit.value()) {
                Ok(d) if d.is_zero() => {
                    errors.push(*at, error_at(lit, "`timeout` must be greater than zero"));
                    None
                }
                Ok(d) => Some(d),
                Err(msg) => {
                    errors.push(*at, error_at(lit, msg));
                    None
                }
            }
        });

    let backoff = attrs.backoff.as_ref().and_then(|Given { at, value: lit }| {
        match parse_backoff(&lit.value()) {
            Ok(b) => Some(b),
            Err(msg) => {
                errors.push(*at, error_at(lit, msg));
                None
            }
        }
    });

    Model {
        krate,
        name,
        queue,
        tries,
        timeout,
        backoff,
    }
}

fn error_at(lit: &LitStr, message: impl std::fmt::Display) -> syn::Error {
    syn::Error::new(lit.span(), message)
}

/// Job and queue names: not empty, and only [`NAME_CHARS`] (so a name survives a command
/// line, a comma-separated `--queue` list, a file name or a Redis key unquoted). `key` is
/// `name` or `queue`.
fn check_name(key: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("`{key}` must not be empty"));
    }
    let what = if key == "name" {
        "job name"
    } else {
        "queue name"
    };
    match name
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        Some(c) => Err(format!(
            "bad {what} `{name}`: {} is not allowed, use only {NAME_CHARS}",
            describe_char(c)
        )),
        None => Ok(()),
    }
}

fn describe_char(c: char) -> String {
    match c {
        ' ' => "a space".into(),
        ',' => "a comma".into(),
        c if c.is_whitespace() || c.is_control() => format!("`{}`", c.escape_default()),
        c => format!("`{c}`"),
    }
}

/// `SendEmail` -> `send-email`, `HTTPPing` -> `http-ping`, `V2Report` -> `v2-report`,
/// `Send_Email` -> `send-email`: a new word starts at an upper-case letter that follows a
/// lower-case letter or digit, at the last upper-case letter of an acronym followed by a
/// lower-case letter, and after `_`.
pub(crate) fn kebab_case(ident: &str) -> String {
    let chars: Vec<char> = ident.chars().collect();
    let mut out = String::with_capacity(ident.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c == '_' {
            if !out.is_empty() && !out.ends_with('-') {
                out.push('-');
            }
            continue;
        }
        if c.is_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            let boundary =
                prev.is_lowercase() || prev.is_ascii_digit() || (prev.is_uppercase() && next_lower);
            if boundary && !out.is_empty() && !out.ends_with('-') {
                out.push('-');
            }
        }
        out.extend(c.to_lowercase());
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// Mirrors `queue_core::Backoff::parse`, with messages that say what is accepted.
pub(crate) fn parse_backoff(text: &str) -> Result<Backoff, String> {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix("exponential") {
        let base = match rest.strip_prefix(':') {
            Some(d) => parse_duration(d)?,
            None if rest.is_empty() => Duration::from_secs(1),
            None => return Err(unknown_backoff(text)),
        };
        return Ok(Backoff::Exponential {
            base,
            max: Duration::from_secs(600).max(base),
        });
    }
    if let Some(rest) = text.strip_prefix("fixed") {
        return match rest.strip_prefix(':') {
            Some(d) => Ok(Backoff::Fixed(parse_duration(d)?)),
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
        Ok(Backoff::Fixed(list.remove(0)))
    } else {
        Ok(Backoff::List(list))
    }
}

fn unknown_backoff(text: &str) -> String {
    format!(
        "unknown backoff `{text}`, expected `exponential`, `exponential:<base>`, \
         `fixed:<duration>`, a duration or a comma-separated list of durations"
    )
}

/// Mirrors `queue_core::parse_duration`: a number and a unit (`500ms`, `30s`, `5m`, `2h`,
/// `7d`), several run together (`1m30s`), or a bare number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
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

/// Milliseconds in one `unit`, for the units `queue_core::parse_duration` knows.
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
    fn durations_match_queue_core() {
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
    fn backoffs_match_queue_core() {
        let s = Duration::from_secs;
        assert_eq!(
            parse_backoff("exponential"),
            Ok(Backoff::Exponential {
                base: s(1),
                max: s(600)
            })
        );
        assert_eq!(
            parse_backoff("exponential:2s"),
            Ok(Backoff::Exponential {
                base: s(2),
                max: s(600)
            })
        );
        assert_eq!(
            parse_backoff("exponential:1h"),
            Ok(Backoff::Exponential {
                base: s(3600),
                max: s(3600)
            })
        );
        assert_eq!(parse_backoff("fixed:10s"), Ok(Backoff::Fixed(s(10))));
        assert_eq!(parse_backoff("5s"), Ok(Backoff::Fixed(s(5))));
        assert_eq!(
            parse_backoff("1s, 5s,30s"),
            Ok(Backoff::List(vec![s(1), s(5), s(30)]))
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

    #[test]
    fn kebab() {
        assert_eq!(kebab_case("SendEmail"), "send-email");
        assert_eq!(kebab_case("HTTPPing"), "http-ping");
        assert_eq!(kebab_case("PingHTTP"), "ping-http");
        assert_eq!(kebab_case("V2Report"), "v2-report");
        assert_eq!(kebab_case("Report2"), "report2");
        assert_eq!(kebab_case("Send_Email"), "send-email");
        assert_eq!(kebab_case("send_email"), "send-email");
        assert_eq!(kebab_case("Job"), "job");
        assert_eq!(kebab_case("A"), "a");
        assert_eq!(kebab_case("ABC"), "abc");
    }

    #[test]
    fn names() {
        assert!(check_name("name", "send-email").is_ok());
        assert!(check_name("name", "app:mail.Send_v2").is_ok());
        assert_eq!(
            check_name("name", ""),
            Err("`name` must not be empty".into())
        );
        assert_eq!(
            check_name("queue", "high, low"),
            Err(
                "bad queue name `high, low`: a comma is not allowed, use only ASCII letters, \
                 digits, `-`, `_`, `.` and `:`"
                    .into()
            )
        );
        assert!(check_name("name", "send email").is_err());
        assert!(check_name("name", "café").is_err());
    }
}
