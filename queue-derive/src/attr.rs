//! Reads the `#[job(...)]` attributes into [`Attrs`], keeping every value's token (and so its
//! span) for the validation that follows. Syntax problems are collected, not returned at the
//! first one, so that one build reports every mistake.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::{Attribute, Expr, ExprLit, ExprUnary, Lit, LitInt, LitStr, Token, UnOp};

/// The keys `#[job(...)]` accepts, in the order the docs list them.
pub(crate) const KEYS: &[&str] = &["name", "queue", "tries", "timeout", "backoff", "crate"];

/// The raw values of the keys that were given, not yet checked.
#[derive(Default)]
pub(crate) struct Attrs {
    pub(crate) name: Option<Given<LitStr>>,
    pub(crate) queue: Option<Given<LitStr>>,
    pub(crate) tries: Option<Given<Tries>>,
    pub(crate) timeout: Option<Given<LitStr>>,
    pub(crate) backoff: Option<Given<LitStr>>,
    pub(crate) krate: Option<Given<LitStr>>,
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
            parse_key(&meta, at, &mut out, errors)
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
fn parse_key(
    meta: &ParseNestedMeta<'_>,
    at: usize,
    out: &mut Attrs,
    errors: &mut Errors,
) -> syn::Result<()> {
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

    let example = match key.as_str() {
        "name" => "\"send-email\"",
        "queue" => "\"high\"",
        "tries" => "3",
        "timeout" => "\"30s\"",
        "backoff" => "\"exponential\"",
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
        "timeout" => out.timeout.is_some(),
        "backoff" => out.backoff.is_some(),
        _ => out.krate.is_some(),
    };
    if duplicate {
        errors.push(
            at,
            syn::Error::new_spanned(path, format!("duplicate job attribute `{key}`")),
        );
        return Ok(());
    }

    if key == "tries" {
        match tries(&value) {
            Some(value) => out.tries = Some(Given { at, value }),
            None => errors.push(
                at,
                syn::Error::new_spanned(&value, "expected an integer literal, as in `tries = 3`"),
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
                "timeout" | "backoff",
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
        _ => &mut out.krate,
    };
    *slot = Some(Given { at, value: lit });
    Ok(())
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
