//! Checks the attribute values and turns them into a [`Model`] ready for expansion. Every
//! problem is pushed onto the error list, spanned on the literal at fault, and a usable value
//! is still returned so the fallback expansion has a name and a crate path.
//!
//! Durations and backoffs are parsed by `queue-time`, the parser `queue-core` uses too.

use std::time::Duration;

use proc_macro2::Span;
use syn::{Data, Fields, Ident, LitStr};

use crate::attr::{Attrs, By, Errors, Given, Tries, Unique};

/// A checked job definition.
pub(crate) struct Model {
    /// The path of `queue_core`: `::queue_core` unless `crate = "..."` says otherwise.
    pub(crate) krate: syn::Path,
    /// The job's name (given, or the type name in kebab-case).
    pub(crate) name: String,
    pub(crate) queue: Option<String>,
    pub(crate) tries: Option<u32>,
    pub(crate) max_exceptions: Option<u32>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) backoff: Option<Backoff>,
    pub(crate) unique: Option<UniqueModel>,
    pub(crate) limit: Option<LimitModel>,
    pub(crate) encrypted: bool,
    pub(crate) retry_until: Option<Duration>,
    pub(crate) fail_on_timeout: bool,
}

/// A checked `limit = "..."` with its `limit_key` field and `max_throttle_wait`.
pub(crate) struct LimitModel {
    pub(crate) name: String,
    /// The field whose value is the key, spanned on the name in `limit_key`.
    pub(crate) key: Option<(Ident, Span)>,
    pub(crate) max_wait: Option<Duration>,
}

/// A checked `unique(...)`: its key and the settings that differ from `UniqueJob`'s
/// defaults (until terminal, global, no period, skip).
pub(crate) struct UniqueModel {
    pub(crate) key: UniqueKey,
    /// `None` for the default, `Until::Terminal`.
    pub(crate) until: Option<UntilState>,
    pub(crate) per_queue: bool,
    pub(crate) within: Option<Duration>,
    /// `on_conflict = "error"` or `"replace"`; `None` for skipping, the default.
    pub(crate) on_conflict: Option<Conflict>,
}

/// A non-default `on_conflict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Conflict {
    Error,
    Replace,
}

/// Where the unique key comes from.
pub(crate) enum UniqueKey {
    /// Bare `unique`: the empty key, so the job type itself is unique.
    Type,
    /// `by = [...]`: the named fields, each as (the name as written, the field's identifier,
    /// the span of the name in `by`).
    Fields(Vec<(String, Ident, Span)>),
    /// `key = "method"`: the method's name, spanned on the string.
    Method(Ident),
}

/// The non-default values of `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UntilState {
    Started,
    Succeeded,
}

pub(crate) use queue_time::BackoffSpec as Backoff;
use queue_time::{parse_backoff, parse_duration};

/// What a job or queue name may contain, for the messages.
const NAME_CHARS: &str = "ASCII letters, digits, `-`, `_`, `.` and `:`";

/// Checks `attrs` for the type `ident` whose body is `data`, pushing problems onto `errors`.
pub(crate) fn validate(ident: &Ident, data: &Data, attrs: Attrs, errors: &mut Errors) -> Model {
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

    let tries = count(attrs.tries.as_ref(), "tries", errors);
    let max_exceptions = count(attrs.max_exceptions.as_ref(), "max_exceptions", errors);

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

    let unique = attrs
        .unique
        .as_ref()
        .map(|Given { value, .. }| unique(ident, data, value, errors));

    let limit = limit(ident, data, &attrs, errors);
    let retry_until = attrs
        .retry_until
        .as_ref()
        .and_then(
            |Given { at, value: lit }| match parse_duration(&lit.value()) {
                Ok(d) if d.is_zero() => {
                    errors.push(
                        *at,
                        error_at(lit, "`retry_until` must be greater than zero"),
                    );
                    None
                }
                Ok(d) => Some(d),
                Err(msg) => {
                    errors.push(*at, error_at(lit, msg));
                    None
                }
            },
        );

    Model {
        krate,
        name,
        queue,
        tries,
        max_exceptions,
        timeout,
        backoff,
        unique,
        limit,
        encrypted: attrs.encrypted.is_some(),
        retry_until,
        fail_on_timeout: attrs.fail_on_timeout.is_some(),
    }
}

/// Checks `limit`, `limit_key` and `max_throttle_wait` (the last two need the first).
fn limit(ident: &Ident, data: &Data, attrs: &Attrs, errors: &mut Errors) -> Option<LimitModel> {
    let Some(Given { at, value: lit }) = &attrs.limit else {
        for (given, key) in [
            (&attrs.limit_key, "limit_key"),
            (&attrs.max_throttle_wait, "max_throttle_wait"),
        ] {
            if let Some(Given { at, value }) = given {
                errors.push(
                    *at,
                    error_at(
                        value,
                        format!("`{key}` needs a `limit`, as in `limit = \"stripe\"`"),
                    ),
                );
            }
        }
        return None;
    };
    let name = lit.value();
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !ok {
        errors.push(
            *at,
            error_at(
                lit,
                "a limit name is letters, digits, `_`, `-` and `.` (at most 100 bytes)",
            ),
        );
    }
    let key = attrs
        .limit_key
        .as_ref()
        .and_then(
            |Given { at, value: lit }| match limit_field(ident, data, lit) {
                Ok(field) => Some((field, lit.span())),
                Err(error) => {
                    errors.push(*at, error);
                    None
                }
            },
        );
    let max_wait = attrs
        .max_throttle_wait
        .as_ref()
        .and_then(
            |Given { at, value: lit }| match parse_duration(&lit.value()) {
                Ok(d) => Some(d),
                Err(msg) => {
                    errors.push(*at, error_at(lit, msg));
                    None
                }
            },
        );
    Some(LimitModel {
        name,
        key,
        max_wait,
    })
}

/// The field `limit_key` names.
fn limit_field(ident: &Ident, data: &Data, lit: &LitStr) -> Result<Ident, syn::Error> {
    let Data::Struct(syn::DataStruct {
        fields: Fields::Named(named),
        ..
    }) = data
    else {
        return Err(error_at(
            lit,
            format!("`limit_key` names a field, and `{ident}` is not a struct with named fields"),
        ));
    };
    let wanted = lit.value();
    let wanted = wanted.strip_prefix("r#").unwrap_or(&wanted);
    let names: Vec<&Ident> = named
        .named
        .iter()
        .filter_map(|f| f.ident.as_ref())
        .collect();
    names
        .iter()
        .find(|f| syn::ext::IdentExt::unraw(**f) == wanted)
        .map(|f| (*f).clone())
        .ok_or_else(|| {
            let list: Vec<String> = names.iter().map(|f| format!("`{f}`")).collect();
            error_at(
                lit,
                format!(
                    "`{ident}` has no field `{wanted}`; its fields are {}",
                    list.join(", ")
                ),
            )
        })
}

/// Checks `unique(...)`.
fn unique(ident: &Ident, data: &Data, unique: &Unique, errors: &mut Errors) -> UniqueModel {
    let key = if let Some(Given { at, value: by }) = &unique.by {
        match by_fields(ident, data, by) {
            Ok(fields) => UniqueKey::Fields(fields),
            Err(found) => {
                for error in found {
                    errors.push(*at, error);
                }
                UniqueKey::Type
            }
        }
    } else if let Some(Given { at, value: lit }) = &unique.key {
        match lit.parse::<Ident>() {
            Ok(method) => UniqueKey::Method(method),
            Err(_) => {
                errors.push(
                    *at,
                    error_at(
                        lit,
                        format!(
                            "bad method name `{}`: `key` names a method of `{ident}`, as in \
                             `key = \"unique_key\"` for `fn unique_key(&self) -> impl ToString`",
                            lit.value()
                        ),
                    ),
                );
                UniqueKey::Type
            }
        }
    } else {
        UniqueKey::Type
    };

    let until = unique.until.as_ref().and_then(|Given { at, value: lit }| {
        match until_state(&lit.value()) {
            Ok(until) => until,
            Err(msg) => {
                errors.push(*at, error_at(lit, msg));
                None
            }
        }
    });

    let per_queue = unique
        .scope
        .as_ref()
        .is_some_and(|Given { at, value: lit }| match lit.value().as_str() {
            "global" => false,
            "queue" => true,
            other => {
                errors.push(
                    *at,
                    error_at(
                        lit,
                        format!(
                            "unknown `scope` `{other}`, expected `global` (one key across \
                             queues, the default) or `queue` (one key per queue)"
                        ),
                    ),
                );
                false
            }
        });

    let within = unique.within.as_ref().and_then(|Given { at, value: lit }| {
        match parse_duration(&lit.value()) {
            Ok(d) if d.is_zero() => {
                errors.push(*at, error_at(lit, "`within` must be greater than zero"));
                None
            }
            Ok(d) => Some(d),
            Err(msg) => {
                errors.push(*at, error_at(lit, msg));
                None
            }
        }
    });

    let on_conflict = unique
        .on_conflict
        .as_ref()
        .and_then(|Given { at, value: lit }| match on_conflict(&lit.value()) {
            Ok(conflict) => conflict,
            Err(msg) => {
                errors.push(*at, error_at(lit, msg));
                None
            }
        });

    UniqueModel {
        key,
        until,
        per_queue,
        within,
        on_conflict,
    }
}

/// `until`: `None` for `terminal`, the default.
fn until_state(value: &str) -> Result<Option<UntilState>, String> {
    match value {
        "started" => Ok(Some(UntilState::Started)),
        "succeeded" => Ok(Some(UntilState::Succeeded)),
        "terminal" => Ok(None),
        other => Err(format!(
            "unknown `until` `{other}`, expected `started` (until a worker takes the job), \
             `succeeded` (until it succeeds) or `terminal` (until it leaves the queue, the \
             default)"
        )),
    }
}

/// `on_conflict`: a duplicate is skipped (`skip`, the default), an error (`error`), or
/// replaces the queued job holding the key (`replace`).
fn on_conflict(value: &str) -> Result<Option<Conflict>, String> {
    match value {
        "skip" => Ok(None),
        "error" => Ok(Some(Conflict::Error)),
        "replace" => Ok(Some(Conflict::Replace)),
        other => Err(format!(
            "unknown `on_conflict` `{other}`, expected `skip` (store nothing, the default), \
             `error` (fail the dispatch) or `replace` (the queued job takes the new payload)"
        )),
    }
}

/// The fields `by` names, checked against the type's named fields; every problem found.
fn by_fields(
    ident: &Ident,
    data: &Data,
    by: &By,
) -> Result<Vec<(String, Ident, Span)>, Vec<syn::Error>> {
    let use_key = "use `key = \"method\"` with a method `fn method(&self) -> impl ToString` \
                   that makes the key";
    let no_names = |what: &str| {
        vec![syn::Error::new_spanned(
            &by.tokens,
            format!("`by` names fields, but `{ident}` is {what}; {use_key}"),
        )]
    };
    let named = match data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(named) => named,
            Fields::Unnamed(_) => {
                return Err(no_names("a tuple struct, whose fields have no names"))
            }
            Fields::Unit => return Err(no_names("a unit struct, which has no fields")),
        },
        Data::Enum(_) => return Err(no_names("an enum")),
        // Reported as unsupported already.
        Data::Union(_) => return Err(Vec::new()),
    };
    let existing: Vec<(String, &Ident)> = named
        .named
        .iter()
        .filter_map(|f| f.ident.as_ref())
        .map(|f| (syn::ext::IdentExt::unraw(f).to_string(), f))
        .collect();

    let mut fields: Vec<(String, Ident, Span)> = Vec::with_capacity(by.fields.len());
    let mut errors = Vec::new();
    for lit in &by.fields {
        let name = lit.value();
        let name = name.strip_prefix("r#").unwrap_or(&name);
        if fields.iter().any(|(seen, _, _)| seen == name) {
            errors.push(error_at(
                lit,
                format!("field `{name}` is named twice in `by`"),
            ));
            continue;
        }
        match existing.iter().find(|(existing, _)| existing == name) {
            Some((name, field)) => fields.push((name.clone(), (*field).clone(), lit.span())),
            None => {
                let list = if existing.is_empty() {
                    format!("`{ident}` has no fields")
                } else {
                    let names: Vec<String> =
                        existing.iter().map(|(n, _)| format!("`{n}`")).collect();
                    format!("the fields of `{ident}` are {}", names.join(", "))
                };
                errors.push(error_at(
                    lit,
                    format!("no field `{name}` in `{ident}`: {list}"),
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(fields)
    } else {
        Err(errors)
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

/// Checks a count (`tries`, `max_exceptions`): a whole number, at least 1.
fn count(given: Option<&Given<Tries>>, key: &str, errors: &mut Errors) -> Option<u32> {
    let Given { at, value: t } = given?;
    let at_least_one = || syn::Error::new_spanned(&t.tokens, format!("`{key}` must be at least 1"));
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
                    format!("`{key}` must be a whole number from 1 to {}", u32::MAX),
                ),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syn::DeriveInput;

    /// `by_fields` for `by = [names]` on `input`: the field names found, or the messages.
    fn by(input: DeriveInput, names: &[&str]) -> Result<Vec<String>, Vec<String>> {
        let fields: Vec<LitStr> = names
            .iter()
            .map(|n| LitStr::new(n, Span::call_site()))
            .collect();
        let by = By {
            tokens: quote::quote!(by = [#(#fields),*]),
            fields,
        };
        by_fields(&input.ident, &input.data, &by)
            .map(|found| found.into_iter().map(|(name, _, _)| name).collect())
            .map_err(|errors| errors.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn by_names_existing_fields() {
        let sync: DeriveInput = syn::parse_quote! {
            struct Sync { customer_id: u64, r#type: String, region: String }
        };
        assert_eq!(
            by(sync.clone(), &["region", "customer_id"]),
            Ok(vec!["region".into(), "customer_id".into()])
        );
        assert_eq!(
            by(sync.clone(), &["type", "r#type"]),
            Err(vec!["field `type` is named twice in `by`".into()])
        );
        assert_eq!(
            by(sync, &["regoin", "id"]),
            Err(vec![
                "no field `regoin` in `Sync`: the fields of `Sync` are `customer_id`, `type`, \
                 `region`"
                    .into(),
                "no field `id` in `Sync`: the fields of `Sync` are `customer_id`, `type`, \
                 `region`"
                    .into(),
            ])
        );
        let empty: DeriveInput = syn::parse_quote!(
            struct Empty {}
        );
        assert_eq!(
            by(empty, &["id"]),
            Err(vec![
                "no field `id` in `Empty`: `Empty` has no fields".into()
            ])
        );
    }

    #[test]
    fn by_needs_named_fields() {
        let use_key = "use `key = \"method\"` with a method `fn method(&self) -> impl ToString` \
                       that makes the key";
        for (input, what) in [
            (
                syn::parse_quote!(
                    struct Pair(u32, u32);
                ),
                "a tuple struct, whose fields have no names",
            ),
            (
                syn::parse_quote!(
                    struct Tick;
                ),
                "a unit struct, which has no fields",
            ),
            (
                syn::parse_quote!(
                    enum Refresh {
                        All,
                    }
                ),
                "an enum",
            ),
        ] {
            let input: DeriveInput = input;
            let ident = input.ident.to_string();
            assert_eq!(
                by(input, &["0"]),
                Err(vec![format!(
                    "`by` names fields, but `{ident}` is {what}; {use_key}"
                )])
            );
        }
    }

    #[test]
    fn unique_settings() {
        assert_eq!(until_state("started"), Ok(Some(UntilState::Started)));
        assert_eq!(until_state("succeeded"), Ok(Some(UntilState::Succeeded)));
        assert_eq!(until_state("terminal"), Ok(None));
        assert!(until_state("Started").is_err());
        assert!(until_state("finished")
            .unwrap_err()
            .starts_with("unknown `until` `finished`, expected `started`"));

        assert_eq!(on_conflict("skip"), Ok(None));
        assert_eq!(on_conflict("error"), Ok(Some(Conflict::Error)));
        assert_eq!(on_conflict("replace"), Ok(Some(Conflict::Replace)));
        assert!(on_conflict("ignore")
            .unwrap_err()
            .starts_with("unknown `on_conflict` `ignore`"));
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
