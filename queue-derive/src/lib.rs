//! `#[derive(Job)]` for `queue-core`. Use it through `queue_core::Job`.
//!
//! The crate is laid out in three steps: `attr` reads the `#[job(...)]` attributes, `valid`
//! checks them (and parses durations and backoffs at compile time), `expand` writes the code.

mod attr;
mod expand;
mod valid;

use proc_macro::TokenStream;

/// `#[derive(Job)]`: implements `queue_core::Job` and registers the type, so every worker
/// binary that links the crate knows the job by name. The type must also implement
/// `queue_core::Handle` (written by hand: the job's body), `Serialize` and `Deserialize`.
///
/// ```
/// use queue_core::{Handle, Job, JobContext, JobError};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Job)]
/// #[job(name = "send-email", queue = "high", tries = 3, timeout = "30s", backoff = "exponential")]
/// struct SendEmail {
///     to: String,
/// }
///
/// impl Handle for SendEmail {
///     async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
///         Ok(())
///     }
/// }
///
/// assert_eq!(SendEmail::NAME, "send-email");
/// assert_eq!(SendEmail::QUEUE, "high");
/// assert_eq!(SendEmail::TRIES, Some(3));
/// assert!(queue_core::registry::find("send-email").is_some());
/// ```
///
/// Keys of `#[job(...)]`, all optional (a key left out keeps the trait's default):
///
/// | key | example | default |
/// |---|---|---|
/// | `name` | `"send-email"` | the type's name in kebab-case |
/// | `queue` | `"high"` | `"default"` |
/// | `tries` | `3` | the worker's `--retries` |
/// | `timeout` | `"30s"`, `"500ms"`, `"2m"` | the worker's `--timeout` |
/// | `backoff` | `"exponential"`, `"exponential:2s"`, `"fixed:10s"`, `"1s,10s,60s"` | exponential from 1 s |
/// | `crate` | `"::my_facade::queue_core"` | `::queue_core` |
///
/// - `name`: the name the job is stored and found under. Without it, the type's name in
///   kebab-case: `SendEmail` is `send-email`, `HTTPPing` is `http-ping`, `V2Report` is
///   `v2-report`. A name, given or derived, must not be empty and may only contain ASCII
///   letters, digits, `-`, `_`, `.` and `:`.
/// - `queue`: the queue it goes on unless the dispatch says otherwise; same characters as
///   `name` (so no commas or spaces, which would not survive `--queue high,default`).
/// - `tries`: an integer literal, at least 1: attempts before the job moves to the failed
///   store.
/// - `timeout`: how long one attempt may run, greater than zero. A number and a unit (`ms`,
///   `s`, `m`, `h`, `d`), several run together (`"1m30s"`), or a bare number of seconds.
/// - `backoff`: the wait between attempts. `"exponential"` (from 1 s, at most 10 min),
///   `"exponential:2s"` (from 2 s, at most 10 min or the base if larger), `"fixed:10s"`, a
///   single duration (fixed), or a comma-separated list (one wait per attempt, the last
///   repeats). The forms are those of `queue_core::Backoff::parse`.
/// - `crate`: the path of `queue_core` in the generated code, for crates that re-export it.
///
/// Durations and backoffs are parsed at compile time. Mistakes are compile errors pointing
/// at the offending token, all reported at once. Generic types and unions are rejected;
/// structs of any kind and enums are accepted.
#[proc_macro_derive(Job, attributes(job))]
pub fn derive_job(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    expand::derive(&input).into()
}
