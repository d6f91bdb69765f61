//! Generates the `impl Job` and the `inventory` registration, or, when the attributes are
//! wrong, the errors plus a minimal `impl Job` so that code using the type (its `impl Handle`,
//! its dispatches) does not add errors of its own.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::{Data, DeriveInput};

use crate::attr::{self, Errors};
use crate::valid::{self, Backoff, Model};

/// Expands `#[derive(Job)]` on `input`.
pub(crate) fn derive(input: &DeriveInput) -> TokenStream {
    let mut errors = Errors::default();
    let shape_ok = check_shape(input, &mut errors);
    let attrs = attr::parse(&input.attrs, &mut errors);
    let model = valid::validate(&input.ident, attrs, &mut errors);

    match errors.combined() {
        None => expand(input, &model),
        Some(error) => {
            let errors = error.to_compile_error();
            // An unsupported type gets no fallback: the impl itself would fail to compile.
            let fallback = if shape_ok {
                fallback(input, &model)
            } else {
                TokenStream::new()
            };
            quote! {
                #errors
                #fallback
            }
        }
    }
}

/// Unions and generic types are rejected: a job must be `'static`, (de)serializable, and
/// registered under one name, which a generic type would claim once per instantiation.
fn check_shape(input: &DeriveInput, errors: &mut Errors) -> bool {
    let mut ok = true;
    if let Data::Union(u) = &input.data {
        errors.push(
            Errors::AFTER_ATTRS,
            syn::Error::new(
                u.union_token.span,
                "#[derive(Job)] does not support unions, use a struct or an enum",
            ),
        );
        ok = false;
    }
    let generics = &input.generics;
    if !generics.params.is_empty() {
        let message = "#[derive(Job)] does not support generic types: a job type is registered \
                       under one name, so it must be a concrete type";
        errors.push(
            Errors::AFTER_ATTRS,
            syn::Error::new_spanned(generics, message),
        );
        ok = false;
    } else if let Some(clause) = &generics.where_clause {
        errors.push(
            Errors::AFTER_ATTRS,
            syn::Error::new_spanned(clause, "#[derive(Job)] does not support `where` clauses"),
        );
        ok = false;
    }
    ok
}

fn expand(input: &DeriveInput, model: &Model) -> TokenStream {
    let ident = &input.ident;
    let krate = &model.krate;
    let name = &model.name;
    let duration = quote!(#krate::__private::Duration);
    let option = quote!(::core::option::Option);

    let queue = model.queue.as_ref().map(|queue| {
        quote! { const QUEUE: &'static str = #queue; }
    });
    let tries = model.tries.map(|tries| {
        quote! { const TRIES: #option<u32> = #option::Some(#tries); }
    });
    let timeout = model.timeout.map(|timeout| {
        let timeout = duration_expr(&duration, timeout);
        quote! { const TIMEOUT: #option<#duration> = #option::Some(#timeout); }
    });
    let backoff = model.backoff.as_ref().map(|backoff| {
        let value = match backoff {
            Backoff::Fixed(d) => {
                let d = duration_expr(&duration, *d);
                quote! { #krate::Backoff::Fixed(#d) }
            }
            Backoff::Exponential { base, max } => {
                let base = duration_expr(&duration, *base);
                let max = duration_expr(&duration, *max);
                quote! { #krate::Backoff::Exponential { base: #base, max: #max } }
            }
            Backoff::List(list) => {
                let items = list.iter().map(|d| duration_expr(&duration, *d));
                // Through a named const: a `&[...]` that is a const's whole initializer is
                // `'static` on every compiler, without relying on how far newer ones extend
                // temporaries inside constructor arguments.
                quote! {
                    #krate::Backoff::List(#krate::__private::Cow::Borrowed({
                        const LIST: &[#duration] = &[#(#items),*];
                        LIST
                    }))
                }
            }
        };
        quote! { const BACKOFF: #option<#krate::Backoff> = #option::Some(#value); }
    });

    // Spanned on the type's name, so that a missing `impl Handle` points at the type.
    let registration = quote_spanned! {ident.span()=>
        #krate::__private::JobRegistration::of::<#ident>()
    };

    quote! {
        const _: () = {
            #[automatically_derived]
            impl #krate::Job for #ident {
                const NAME: &'static str = #name;
                #queue
                #tries
                #timeout
                #backoff
            }

            #krate::__private::inventory::submit! {
                #registration
            }
        };
    }
}

/// After an attribute error: just enough of an `impl Job` for the rest of the crate to
/// type-check, with no registration (whose `Handle` bound could only add noise).
fn fallback(input: &DeriveInput, model: &Model) -> TokenStream {
    let ident = &input.ident;
    let krate = &model.krate;
    let name = &model.name;
    quote! {
        const _: () = {
            #[automatically_derived]
            impl #krate::Job for #ident {
                const NAME: &'static str = #name;
            }
        };
    }
}

/// A `Duration` const expression: `from_millis` when the milliseconds fit in a `u64`, else
/// `new(secs, nanos)` (a bare number of seconds can exceed that).
fn duration_expr(duration: &TokenStream, d: std::time::Duration) -> TokenStream {
    match u64::try_from(d.as_millis()) {
        Ok(millis) if d.subsec_nanos().is_multiple_of(1_000_000) => {
            quote! { #duration::from_millis(#millis) }
        }
        _ => {
            let secs = d.as_secs();
            let nanos = d.subsec_nanos();
            quote! { #duration::new(#secs, #nanos) }
        }
    }
}
