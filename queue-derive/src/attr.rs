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
    pub(crate) name: Option<LitStr>,
    pub(crate) queue: Option<LitStr>,
    pub(crate) tries: Option<Tries>,
    pub(crate) timeout: Option<LitStr>,
    pub(crate) backoff: Option<LitStr>,
    pub(crate) krate: Option<LitStr>,
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
pub(crate) fn parse(attrs: &[Attribute], errors: &mut Vec<syn::Error>) -> Attrs {
    let mut out = Attrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("job")) {
        let result = attr.parse_nested_meta(|meta| {
            parse_key(&meta, &mut out, errors)?;
            Ok(())
        });
        if let Err(err) = result {
            errors.push(err);
        }
    }
    out
}

/// Reads one `key = value`. Returns `Err` only for token streams it cannot step over; value
/// problems are pushed onto `errors` so parsing goes on with the next key.
fn parse_key(meta: &ParseNestedMeta<'_>, out: &mut Attrs, errors: &mut Vec<syn::Error>) -> syn::Result<()> {
    let path = &meta.path;
    let key = match path.get_ident() {
        Some(ident) if KEYS.contains(&ident.to_string().as_str()) => ident.to_string(),
        _ => {
            errors.push(syn::Error::new_spanned(
                path,
                format!(
                    "unknown job attribute `{}`, expected one of: {}",
                    path_text(path),
                    KEYS.join(", ")
                ),
            ));
            return skip_value(meta);
        }
    };

    if !meta.input.peek(Token![=]) {
        let example = match key.as_str() {
            "tries" => "3",
            "timeout" => "\"30s\"",
            "backoff" => "\"exponential\"",
            "name" => "\"send-email\"",
            "queue" => "\"high\"",
            _ => "\"::queue_core\"",
        };
        errors.push(syn::Error::new_spanned(
            path,
            format!("job attribute `{key}` needs a value, as in `{key} = {example}`"),
        ));
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
        errors.push(syn::Error::new_spanned(
            path,
            format!("duplicate job attribute `{key}`"),
        ));
        return Ok(());
    }

    if key == "tries" {
        match tries(&value) {
            Some(t) => out.tries = Some(t),
            None => errors.push(syn::Error::new_spanned(
                &value,
                "expected an integer literal, as in `tries = 3`",
            )),
        }
        return Ok(());
    }

    let Expr::Lit(ExprLit {
        lit: Lit::Str(lit), ..
    }) = value
    else {
        let hint = match (key.as_str(), &value) {
            (
                "timeout" | "backoff",
                Expr::Lit(ExprLit {
                    lit: Lit::Int(int), ..
                }),
            ) => format!(", as in `{key} = \"{}s\"`", int.base10_digits()),
            ("crate", Expr::Path(p)) => {
                format!(", as in `crate = \"{}\"`", path_text(&p.path))
            }
            _ => String::new(),
        };
        errors.push(syn::Error::new_spanned(
            &value,
            format!("expected a string literal{hint}"),
        ));
        return Ok(());
    };
    let slot = match key.as_str() {
        "name" => &mut out.name,
        "queue" => &mut out.queue,
        "timeout" => &mut out.timeout,
        "backoff" => &mut out.backoff,
        _ => &mut out.krate,
    };
    *slot = Some(lit);
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
