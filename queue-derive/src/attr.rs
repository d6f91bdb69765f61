//! Reads the `#[job(...)]` attributes into [`Attrs`], keeping every value's token (and so its
//! span) for the validation that follows. Syntax problems are collected, not returned at the
//! first one, so that one build reports every mistake.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::{Attribute, Expr, ExprArray, ExprLit, ExprUnary, Lit, LitInt, LitStr, Token, UnOp};

/// The keys `#[job(...)]` accepts, in the order the docs list them.
pub(crate) const KEYS: &[&str] = &[
    "name",
    "queue",
    "tries",
    "max_exceptions",
    "timeout",
    "backoff",
    "unique",
    "limit",
    "limit_key",
    "max_throttle_wait",
    "retry_until",
    "fail_on_timeout",
    "encrypted",
    "crate",
];

/// The settings `unique(...)` accepts, in the order the docs list them.
pub(crate) const UNIQUE_KEYS: &[&str] = &["by", "key", "until", "scope", "within", "on_conflict"];

/// The raw values of the keys that were given, not yet checked.
#[derive(Default)]
pub(crate) struct Attrs {
    pub(crate) name: Option<Given<LitStr>>,
    pub(crate) queue: Option<Given<LitStr>>,
    pub(crate) tries: Option<Given<Tries>>,
    pub(crate) max_exceptions: Option<Given<Tries>>,
    pub(crate) timeout: Option<Given<LitStr>>,
    pub(crate) backoff: Option<Given<LitStr>>,
    pub(crate) unique: Option<Given<Unique>>,
    pub(crate) limit: Option<Given<LitStr>>,
    pub(crate) limit_key: Option<Given<LitStr>>,
    pub(crate) max_throttle_wait: Option<Given<LitStr>>,
    pub(crate) retry_until: Option<Given<LitStr>>,
    /// `fail_on_timeout`, a flag: where it was written.
    pub(crate) fail_on_timeout: Option<Given<proc_macro2::Span>>,
    /// `encrypted`, a flag: where it was written.
    pub(crate) encrypted: Option<Given<proc_macro2::Span>>,
    pub(crate) krate: Option<Given<LitStr>>,
}

/// The settings of `unique` (all `None` for a bare `unique`). Each has its own position, so
/// that errors about them come out in source order among the other keys' errors.
#[derive(Default)]
pub(crate) struct Unique {
    pub(crate) by: Option<Given<By>>,
    pub(crate) key: Option<Given<LitStr>>,
    pub(crate) until: Option<Given<LitStr>>,
    pub(crate) scope: Option<Given<LitStr>>,
    pub(crate) within: Option<Given<LitStr>>,
    pub(crate) on_conflict: Option<Given<LitStr>>,
}

/// The value of `unique(by = [...])`: the field names that are string literals (the others
/// were reported), never empty.
pub(crate) struct By {
    pub(crate) fields: Vec<LitStr>,
    /// `by = [...]` as written, to span messages about the whole setting on.
    pub(crate) tokens: TokenStream,
}

/// A value and the position of its key among all the keys of the type's `#[job(...)]`
/// attributes, so that errors found later come out in source order.
pub(crate) struct Given<T> {
    pub(crate) at: usize,
    pub(crate) value: T,
}

/// Errors collected across parsing and validation, each with the position it belongs at:
/// a key's position (see [`Given`]), or [`Errors::AFTER_ATTRS`] for the type itself.
#[derive(Default)]
pub(crate) struct Errors(Vec<(usize, syn::Error)>);

impl Errors {
    /// The position of errors about the type's name, generics or kind, which come after
    /// its attributes in the source.
    pub(crate) const AFTER_ATTRS: usize = usize::MAX;

    pub(crate) fn push(&mut self, at: usize, error: syn::Error) {
        self.0.push((at, error));
    }

    /// All the errors as one, in source order, or `None` if there were none.
    pub(crate) fn combined(mut self) -> Option<syn::Error> {
        self.0.sort_by_key(|(at, _)| *at);
        self.0.into_iter().map(|(_, e)| e).reduce(|mut all, e| {
            all.combine(e);
            all
        })
    }
}

/// The value of `tries`: an integer literal, possibly negated (so that `tries = -1` gets the
/// "at least 1" message instead of a syntax one).
pub(crate) struct Tries {
    pub(crate) lit: LitInt,
    pub(crate) negative: bool,
    /// The whole value, sign included, to span messages on.
    pub(crate) tokens: TokenStream,
}

/// Parses every `#[job(...)]` among `attrs`, pushing problems onto `errors`.
pub(crate) fn parse(attrs: &[Attribute], errors: &mut Errors) -> Attrs {
    let mut out = Attrs::default();
    let mut at = 0;
    for attr in attrs.iter().filter(|a| a.path().is_ident("job")) {
        let result = attr.parse_nested_meta(|meta| {
            at += 1;
            parse_key(&meta, &mut at, &mut out, errors)
        });
        if let Err(err) = result {
            at += 1;
            errors.push(at, err);
        }
    }
    out
}

/// Reads one `key = value`. Returns `Err` only for token streams it cannot step over; value
/// problems are pushed onto `errors` so parsing goes on with the next key.
///
/// `next` is the key's position; `unique(...)` moves it on by one per setting.
fn parse_key(
    meta: &ParseNestedMeta<'_>,
    next: &mut usize,
    out: &mut Attrs,
    errors: &mut Errors,
) -> syn::Result<()> {
    let at = *next;
    let path = &meta.path;
    let key = match path.get_ident() {
        Some(ident) if KEYS.contains(&ident.to_string().as_str()) => ident.to_string(),
        _ => {
            errors.push(
                at,
                syn::Error::new_spanned(
                    path,
                    format!(
                        "unknown job attribute `{}`, expected one of: {}",
                        path_text(path),
                        KEYS.join(", ")
                    ),
                ),
            );
            return skip_value(meta);
        }
    };

    if key == "unique" {
        return parse_unique(meta, next, out, errors);
    }
    if key == "encrypted" || key == "fail_on_timeout" {
        let slot = if key == "encrypted" {
            &mut out.encrypted
        } else {
            &mut out.fail_on_timeout
        };
        if slot.is_some() {
            errors.push(
                at,
                syn::Error::new_spanned(path, format!("duplicate job attribute `{key}`")),
            );
        } else if meta.input.peek(Token![=])
            || !meta.input.is_empty() && !meta.input.peek(Token![,])
        {
            errors.push(
                at,
                syn::Error::new_spanned(
                    path,
                    format!("`{key}` is a flag and takes no value: write `#[job({key})]`"),
                ),
            );
            return skip_value(meta);
        } else {
            *slot = Some(Given {
                at,
                value: syn::spanned::Spanned::span(path),
            });
        }
        return Ok(());
    }

    let example = match key.as_str() {
        "name" => "\"send-email\"",
        "queue" => "\"high\"",
        "tries" => "3",
        "max_exceptions" => "3",
        "timeout" => "\"30s\"",
        "backoff" => "\"exponential\"",
        "limit" => "\"stripe\"",
        "limit_key" => "\"account_id\"",
        "max_throttle_wait" => "\"1h\"",
        "retry_until" => "\"2h\"",
        _ => "\"::queue_core\"",
    };
    if !meta.input.peek(Token![=]) {
        errors.push(
            at,
            syn::Error::new_spanned(
                path,
                format!("job attribute `{key}` needs a value, as in `{key} = {example}`"),
            ),
        );
        return skip_value(meta);
    }
    let value = unwrap_groups(meta.value()?.parse::<Expr>()?);

    let duplicate = match key.as_str() {
        "name" => out.name.is_some(),
        "queue" => out.queue.is_some(),
        "tries" => out.tries.is_some(),
        "max_exceptions" => out.max_exceptions.is_some(),
        "timeout" => out.timeout.is_some(),
        "backoff" => out.backoff.is_some(),
        "limit" => out.limit.is_some(),
        "limit_key" => out.limit_key.is_some(),
        "max_throttle_wait" => out.max_throttle_wait.is_some(),
        "retry_until" => out.retry_until.is_some(),
        _ => out.krate.is_some(),
    };
    if duplicate {
        errors.push(
            at,
            syn::Error::new_spanned(path, format!("duplicate job attribute `{key}`")),
        );
        return Ok(());
    }

    if key == "tries" || key == "max_exceptions" {
        match tries(&value) {
            Some(value) if key == "tries" => out.tries = Some(Given { at, value }),
            Some(value) => out.max_exceptions = Some(Given { at, value }),
            None => errors.push(
                at,
                syn::Error::new_spanned(
                    &value,
                    format!("expected an integer literal, as in `{key} = 3`"),
                ),
            ),
        }
        return Ok(());
    }

    let Expr::Lit(ExprLit {
        lit: Lit::Str(lit), ..
    }) = value
    else {
        // The example fits the mistake where it can: `timeout = 30` -> `"30s"`.
        let example = match (key.as_str(), &value) {
            (
                "timeout" | "backoff" | "max_throttle_wait" | "retry_until",
                Expr::Lit(ExprLit {
                    lit: Lit::Int(int), ..
                }),
            ) => format!("\"{}s\"", int.base10_digits()),
            ("crate", Expr::Path(p)) => format!("\"{}\"", path_text(&p.path)),
            _ => example.to_owned(),
        };
        errors.push(
            at,
            syn::Error::new_spanned(
                &value,
                format!("expected a string literal, as in `{key} = {example}`"),
            ),
        );
        return Ok(());
    };
    let slot = match key.as_str() {
        "name" => &mut out.name,
        "queue" => &mut out.queue,
        "timeout" => &mut out.timeout,
        "backoff" => &mut out.backoff,
        "limit" => &mut out.limit,
        "limit_key" => &mut out.limit_key,
        "max_throttle_wait" => &mut out.max_throttle_wait,
        "retry_until" => &mut out.retry_until,
        _ => &mut out.krate,
    };
    *slot = Some(Given { at, value: lit });
    Ok(())
}

/// Reads `unique`, `unique(setting = value, ...)`, and reports `unique = ...`.
fn parse_unique(
    meta: &ParseNestedMeta<'_>,
    next: &mut usize,
    out: &mut Attrs,
    errors: &mut Errors,
) -> syn::Result<()> {
    let at = *next;
    let path = &meta.path;
    if meta.input.peek(Token![=]) {
        let eq: Token![=] = meta.input.parse()?;
        let value = unwrap_groups(meta.input.parse::<Expr>()?);
        // `unique = "customer_id"` and `unique = ["a", "b"]` mean fields: say how to write it.
        let example = match &value {
            Expr::Lit(ExprLit {
                lit: Lit::Str(lit), ..
            }) => format!("unique(by = [{}])", quote_str(&lit.value())),
            Expr::Array(array) => format!("unique(by = {})", array_text(array)),
            _ => "unique(by = [\"customer_id\"])".to_owned(),
        };
        errors.push(
            at,
            syn::Error::new_spanned(
                quote::quote!(#path #eq #value),
                format!(
                    "`unique` takes its settings in parentheses, as in `{example}`; \
                     a bare `unique` makes the job type itself unique"
                ),
            ),
        );
        return Ok(());
    }
    if out.unique.is_some() {
        errors.push(
            at,
            syn::Error::new_spanned(path, "duplicate job attribute `unique`"),
        );
        return skip_value(meta);
    }

    let mut unique = Unique::default();
    if meta.input.peek(syn::token::Paren) {
        meta.parse_nested_meta(|setting| {
            *next += 1;
            parse_unique_setting(&setting, *next, &mut unique, errors)
        })?;
    }
    out.unique = Some(Given { at, value: unique });
    Ok(())
}

/// Reads one `setting = value` inside `unique(...)`.
fn parse_unique_setting(
    meta: &ParseNestedMeta<'_>,
    at: usize,
    out: &mut Unique,
    errors: &mut Errors,
) -> syn::Result<()> {
    let path = &meta.path;
    let key = match path.get_ident() {
        Some(ident) if UNIQUE_KEYS.contains(&ident.to_string().as_str()) => ident.to_string(),
        _ => {
            errors.push(
                at,
                syn::Error::new_spanned(
                    path,
                    format!(
                        "unknown `unique` setting `{}`, expected one of: {}",
                        path_text(path),
                        UNIQUE_KEYS.join(", ")
                    ),
                ),
            );
            return skip_value(meta);
        }
    };

    let example = match key.as_str() {
        "by" => "[\"customer_id\"]",
        "key" => "\"unique_key\"",
        "until" => "\"started\"",
        "scope" => "\"queue\"",
        "within" => "\"10m\"",
        _ => "\"error\"",
    };
    if !meta.input.peek(Token![=]) {
        errors.push(
            at,
            syn::Error::new_spanned(
                path,
                format!("`unique` setting `{key}` needs a value, as in `{key} = {example}`"),
            ),
        );
        return skip_value(meta);
    }
    let eq: Token![=] = meta.input.parse()?;
    let value = unwrap_groups(meta.input.parse::<Expr>()?);

    let duplicate = match key.as_str() {
        "by" => out.by.is_some(),
        "key" => out.key.is_some(),
        "until" => out.until.is_some(),
        "scope" => out.scope.is_some(),
        "within" => out.within.is_some(),
        _ => out.on_conflict.is_some(),
    };
    if duplicate {
        errors.push(
            at,
            syn::Error::new_spanned(path, format!("duplicate `unique` setting `{key}`")),
        );
        return Ok(());
    }
    // Checked here rather than in `valid`, so that the error is on whichever comes second.
    if (key == "by" && out.key.is_some()) || (key == "key" && out.by.is_some()) {
        errors.push(
            at,
            syn::Error::new_spanned(
                path,
                "`by` and `key` cannot be used together: the unique key comes from the fields \
                 that `by` names or from the method that `key` names, not both",
            ),
        );
        return Ok(());
    }

    if key == "by" {
        if let Some(fields) = by_fields(&value, at, errors) {
            let tokens = quote::quote!(#path #eq #value);
            out.by = Some(Given {
                at,
                value: By { fields, tokens },
            });
        }
        return Ok(());
    }

    let Expr::Lit(ExprLit {
        lit: Lit::Str(lit), ..
    }) = value
    else {
        let example = match (key.as_str(), &value) {
            (
                "within",
                Expr::Lit(ExprLit {
                    lit: Lit::Int(int), ..
                }),
            ) => format!("\"{}s\"", int.base10_digits()),
            (_, Expr::Path(p)) => format!("\"{}\"", path_text(&p.path)),
            _ => example.to_owned(),
        };
        errors.push(
            at,
            syn::Error::new_spanned(
                &value,
                format!("expected a string literal, as in `{key} = {example}`"),
            ),
        );
        return Ok(());
    };
    let slot = match key.as_str() {
        "key" => &mut out.key,
        "until" => &mut out.until,
        "scope" => &mut out.scope,
        "within" => &mut out.within,
        _ => &mut out.on_conflict,
    };
    *slot = Some(Given { at, value: lit });
    Ok(())
}

/// The string literals of `by = ["a", "b"]`, reporting anything else. `None` when there is
/// no field name to check: not an array, or an empty one.
fn by_fields(value: &Expr, at: usize, errors: &mut Errors) -> Option<Vec<LitStr>> {
    let array = match value {
        Expr::Array(array) => array,
        _ => {
            let example = match value {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(lit), ..
                }) => format!("[{}]", quote_str(&lit.value())),
                Expr::Path(p) => format!("[{}]", quote_str(&path_text(&p.path))),
                _ => "[\"customer_id\", \"region\"]".to_owned(),
            };
            errors.push(
                at,
                syn::Error::new_spanned(
                    value,
                    format!("expected an array of field names, as in `by = {example}`"),
                ),
            );
            return None;
        }
    };
    if array.elems.is_empty() {
        errors.push(
            at,
            syn::Error::new_spanned(
                array,
                "`by` must name at least one field, as in `by = [\"customer_id\"]`; \
                 a bare `unique` makes the job type itself unique",
            ),
        );
        return None;
    }
    let mut fields = Vec::with_capacity(array.elems.len());
    for elem in &array.elems {
        match unwrap_groups(elem.clone()) {
            Expr::Lit(ExprLit {
                lit: Lit::Str(lit), ..
            }) => fields.push(lit),
            other => {
                let example = match &other {
                    Expr::Path(p) => quote_str(&path_text(&p.path)),
                    _ => "\"customer_id\"".to_owned(),
                };
                errors.push(
                    at,
                    syn::Error::new_spanned(
                        elem,
                        format!("expected a field name as a string literal, as in `{example}`"),
                    ),
                );
            }
        }
    }
    Some(fields)
}

/// `text` as a Rust string literal, for examples in messages.
fn quote_str(text: &str) -> String {
    format!("{text:?}")
}

/// An array as the user wrote it, for messages: `["a", "b"]`.
fn array_text(array: &ExprArray) -> String {
    let items: Vec<String> = array
        .elems
        .iter()
        .map(|e| e.to_token_stream().to_string())
        .collect();
    format!("[{}]", items.join(", "))
}

/// Steps over whatever follows an unknown or value-less key: `= expr` or `(...)`.
fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        meta.value()?.parse::<Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.input.parse::<proc_macro2::Group>()?;
    }
    Ok(())
}

/// `3`, `-3`, `(3)` through a `macro_rules!` fragment.
fn tries(value: &Expr) -> Option<Tries> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(lit), ..
        }) => Some(Tries {
            lit: lit.clone(),
            negative: false,
            tokens: lit.to_token_stream(),
        }),
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr,
            ..
        }) => match unwrap_groups((**expr).clone()) {
            Expr::Lit(ExprLit {
                lit: Lit::Int(lit), ..
            }) => Some(Tries {
                lit,
                negative: true,
                tokens: value.to_token_stream(),
            }),
            _ => None,
        },
        _ => None,
    }
}

/// Strips the invisible groups a `macro_rules!` `$value:expr` fragment leaves around a value.
fn unwrap_groups(mut expr: Expr) -> Expr {
    while let Expr::Group(group) = expr {
        expr = *group.expr;
    }
    expr
}

/// A path as the user wrote it, for messages: `foo::bar`.
fn path_text(path: &syn::Path) -> String {
    path.to_token_stream().to_string().replace(' ', "")
}
