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
/// | `max_exceptions` | `3` | tries alone decide |
/// | `timeout` | `"30s"`, `"500ms"`, `"2m"` | the worker's `--timeout` |
/// | `backoff` | `"exponential"`, `"exponential:2s"`, `"fixed:10s"`, `"1s,10s,60s"` | exponential from 1 s |
/// | `unique` | `unique`, `unique(by = ["customer_id"])`, `unique(key = "sync_key", until = "started")` | not unique |
/// | `limit` | `"stripe"` | no limit |
/// | `limit_key` | `"account_id"` (a field) | one budget for the whole limit |
/// | `max_throttle_wait` | `"1h"` | waits as long as its limit needs |
/// | `retry_until` | `"2h"` | tries alone decide |
/// | `fail_on_timeout` | `fail_on_timeout` (a flag) | a timed-out attempt is retried |
/// | `encrypted` | `encrypted` (a flag) | stored readable |
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
/// - `max_exceptions`: an integer literal, at least 1: errors (and timeouts) before the job
///   moves to the failed store, whatever tries remain (Laravel's `$maxExceptions`). Its
///   attempts that ended otherwise (the job released itself with `ctx.release`, its worker
///   died) count against `tries` only. Needs a store with group counters.
/// - `timeout`: how long one attempt may run, greater than zero. A number and a unit (`ms`,
///   `s`, `m`, `h`, `d`), several run together (`"1m30s"`), or a bare number of seconds.
/// - `backoff`: the wait between attempts. `"exponential"` (from 1 s, at most 10 min),
///   `"exponential:2s"` (from 2 s, at most 10 min or the base if larger), `"fixed:10s"`, a
///   single duration (fixed), or a comma-separated list (one wait per attempt, the last
///   repeats). The forms are those of `queue_core::Backoff::parse`.
/// - `unique`: at most one job per key is queued (`Job::unique`, a `queue_core::UniqueJob`).
///   Bare `unique` makes the job type itself unique (the empty key). Its settings, all
///   optional:
///   - `by = ["customer_id", "region"]`: the key is made of these fields (named fields of a
///     struct, checked at compile time), each as `name=<JSON value>`: `customer_id=42`.
///   - `key = "sync_key"`: the key is what the method `fn sync_key(&self) -> impl ToString`
///     returns; for enums, tuple structs and keys `by` cannot express. Not with `by`.
///   - `until`: how long the job holds its key: `"started"` (until a worker takes it),
///     `"succeeded"`, or `"terminal"` (until it leaves the queue, the default).
///   - `scope`: `"global"` (one key across queues, the default) or `"queue"` (per queue).
///   - `within`: a duration, as for `timeout`: the key is per period of that length.
///   - `on_conflict`: what dispatching a duplicate does: `"skip"` (store nothing, report the
///     job holding the key; the default), `"error"` (fail the dispatch) or `"replace"` (a
///     queued job holding the key takes the new payload; one that has started: as skip).
/// - `limit`: the name of a limit the workers define (`queue_core::Limit`, `[limits]` in
///   `job.toml`): the job starts only when the limit allows, and waiting never counts an
///   attempt (`Job::limit`, a `queue_core::JobLimit`). Letters, digits, `_`, `-`, `.`.
///   - `limit_key`: a field of the struct whose value (`Display`) is the key: each key has
///     its own budget (one per account, per tenant).
///   - `max_throttle_wait`: a duration, as for `timeout`: a job whose earliest start is
///     later than this after its dispatch fails for good, saying so.
/// - `retry_until`: a duration, as for `timeout`: a failed attempt later than this after the
///   job's dispatch fails it for good, whatever tries remain (Laravel's `retryUntil`).
/// - `fail_on_timeout`: an attempt that times out fails the job for good (Laravel's
///   `$failOnTimeout`).
/// - `encrypted`: the job's data is stored encrypted with the queue's keys
///   (`queue_core::KeyRing`, from `RUNALL_KEYS`); its name and settings stay readable.
/// - `crate`: the path of `queue_core` in the generated code, for crates that re-export it.
///
/// ```
/// use queue_core::{Handle, Job, JobContext, JobError, UniqueJob, Until};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Job)]
/// #[job(unique(by = ["customer_id"], until = "started", scope = "queue"))]
/// struct SyncCustomer {
///     customer_id: u64,
///     full: bool,
/// }
///
/// impl Handle for SyncCustomer {
///     async fn handle(self, _ctx: JobContext) -> Result<(), JobError> {
///         Ok(())
///     }
/// }
///
/// let job = SyncCustomer { customer_id: 42, full: true };
/// assert_eq!(
///     job.unique(),
///     Some(UniqueJob::key("customer_id=42").until(Until::Started).per_queue())
/// );
/// ```
///
/// Durations and backoffs are parsed at compile time. Mistakes are compile errors pointing
/// at the offending token, all reported at once. Generic types and unions are rejected;
/// structs of any kind and enums are accepted.
#[proc_macro_derive(Job, attributes(job))]
pub fn derive_job(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    expand::derive(&input).into()
}
