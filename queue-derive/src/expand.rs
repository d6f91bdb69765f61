//! Generates the `impl Job` and the `inventory` registration, or, when the attributes are
//! wrong, the errors plus a minimal `impl Job` so that code using the type (its `impl Handle`,
//! its dispatches) does not add errors of its own.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::{Data, DeriveInput};

use crate::attr::{self, Errors};
use crate::valid::{
    self, Backoff, Conflict, LimitModel, Model, UniqueKey, UniqueModel, UntilState,
};

/// Expands `#[derive(Job)]` on `input`.
pub(crate) fn derive(input: &DeriveInput) -> TokenStream {
    let mut errors = Errors::default();
    let shape_ok = check_shape(input, &mut errors);
    let attrs = attr::parse(&input.attrs, &mut errors);
    let model = valid::validate(&input.ident, &input.data, attrs, &mut errors);

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
    let max_exceptions = model.max_exceptions.map(|n| {
        quote! { const MAX_EXCEPTIONS: #option<u32> = #option::Some(#n); }
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
    let unique = model
        .unique
        .as_ref()
        .map(|unique| unique_fn(krate, &duration, unique));
    let encrypted = model
        .encrypted
        .then(|| quote! { const ENCRYPTED: bool = true; });
    let retry_until = model.retry_until.map(|d| {
        let d = duration_expr(&duration, d);
        quote! { const RETRY_UNTIL: #option<#duration> = #option::Some(#d); }
    });
    let fail_on_timeout = model
        .fail_on_timeout
        .then(|| quote! { const FAIL_ON_TIMEOUT: bool = true; });
    let limit = model
        .limit
        .as_ref()
        .map(|limit| limit_fn(krate, &duration, limit));

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
                #max_exceptions
                #timeout
                #backoff
                #unique
                #limit
                #encrypted
                #retry_until
                #fail_on_timeout
            }

            #krate::__private::inventory::submit! {
                #registration
            }
        };
    }
}

/// `const UNIQUE` and `fn unique`: the key, then a builder call for each setting that is not
/// `UniqueJob`'s default.
fn unique_fn(krate: &syn::Path, duration: &TokenStream, unique: &UniqueModel) -> TokenStream {
    let option = quote!(::core::option::Option);
    let key = match &unique.key {
        UniqueKey::Type => quote! { "" },
        UniqueKey::Fields(fields) => {
            let fields = fields.iter().map(|(name, field, span)| {
                // The call is spanned on the name in `by`, so that a field that is not
                // `Serialize` is labelled there. Not `self`: with the span of a token from a
                // `macro_rules!` fragment it would not name this method's receiver.
                let call = syn::Ident::new("field", *span);
                let borrow = quote_spanned! {*span=> & };
                quote! { .#call(#name, #borrow self.#field) }
            });
            quote! {
                <#krate::__private::FieldsKey as ::core::default::Default>::default()
                    #(#fields)*
                    .finish()
            }
        }
        // The method keeps the string's span: a missing method is reported on it.
        UniqueKey::Method(method) => quote! {
            ::std::string::ToString::to_string(&self.#method())
        },
    };
    let until = unique.until.map(|until| {
        let until = match until {
            UntilState::Started => quote!(Started),
            UntilState::Succeeded => quote!(Succeeded),
        };
        quote! { .until(#krate::Until::#until) }
    });
    let per_queue = unique.per_queue.then(|| quote! { .per_queue() });
    let within = unique.within.map(|within| {
        let within = duration_expr(duration, within);
        quote! { .within(#within) }
    });
    let on_conflict = unique.on_conflict.map(|conflict| match conflict {
        Conflict::Error => quote! { .on_conflict(#krate::OnConflict::Error) },
        Conflict::Replace => quote! { .on_conflict(#krate::OnConflict::Replace) },
    });
    quote! {
        const UNIQUE: bool = true;

        fn unique(&self) -> #option<#krate::UniqueJob> {
            #option::Some(
                #krate::UniqueJob::key(#key)
                    #until
                    #per_queue
                    #within
                    #on_conflict
            )
        }
    }
}

/// `const LIMITED` and `fn limit`.
fn limit_fn(krate: &syn::Path, duration: &TokenStream, limit: &LimitModel) -> TokenStream {
    let option = quote!(::core::option::Option);
    let name = &limit.name;
    // Spanned on the field's name in `limit_key`, so a field that is not `Display` is
    // labelled there.
    let key = limit.key.as_ref().map(|(field, span)| {
        let call = syn::Ident::new("key", *span);
        let borrow = quote_spanned! {*span=> & };
        quote! { .#call(#borrow self.#field) }
    });
    let max_wait = limit.max_wait.map(|d| {
        let d = duration_expr(duration, d);
        quote! { .max_wait(#d) }
    });
    quote! {
        const LIMITED: bool = true;

        fn limit(&self) -> #option<#krate::JobLimit> {
            #option::Some(#krate::JobLimit::new(#name) #key #max_wait)
        }
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
