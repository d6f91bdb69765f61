//! Checks the attribute values and turns them into a [`Model`] ready for expansion. Every
//! problem is pushed onto the error list, spanned on the literal at fault, and a usable value
//! is still returned so the fallback expansion has a name and a crate path.
//!
//! Durations and backoffs are parsed by `queue-time`, the parser `queue-core` uses too.

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

pub(crate) use queue_time::BackoffSpec as Backoff;
use queue_time::{parse_backoff, parse_duration};

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

#[cfg(test)]
mod tests {
    use super::*;

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
