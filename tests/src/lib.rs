//! The conformance suite: one list of cases every driver runs unchanged.
//!
//! A driver's `tests/conformance.rs` is one macro call with an async factory that returns a
//! fresh, isolated store (its own file, table, key prefix or directory) or `None` when the
//! backend is not reachable:
//!
//! ```ignore
//! async fn store() -> Option<std::sync::Arc<dyn queue_core::Storage>> { ... }
//! queue_tests::conformance!(store());
//! ```
//!
//! A case that a driver cannot pass because its backend truly lacks something is marked not
//! applicable by [`Capabilities`](queue_core::Capabilities), with the reason printed.
//! Outside CI a missing server prints `skipped: no server at URL`; with `CI=true` it fails.

pub mod cases;
pub mod engine;
pub mod fault;
pub mod late;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use queue_core::{NewJob, ReserveRequest, Storage};

pub use queue_core;

/// A store under test.
pub type Store = Arc<dyn Storage>;

/// Runs one case against a fresh store from `make`, or reports the skip.
pub async fn run_case<M, F, C, CF>(name: &str, make: M, case: C)
where
    M: FnOnce() -> F,
    F: Future<Output = Option<Store>>,
    C: FnOnce(Store) -> CF,
    CF: Future<Output = ()>,
{
    match make().await {
        Some(store) => case(store).await,
        None => println!("{name}: not run (the driver's factory reported the backend missing)"),
    }
}

/// What a factory calls when its server is unreachable: outside CI it prints the skip
/// notice and returns `None`; in CI (`CI=true`) it panics, so a missing service fails the run.
pub fn server_missing<T>(url: &str, error: impl std::fmt::Display) -> Option<T> {
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("no server at {url} and CI=true: every driver is required in CI ({error})");
    }
    println!("skipped: no server at {url} ({error})");
    None
}

/// A unique name for a queue, table or prefix.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", &queue_core::storage::new_token()[..12])
}

/// A job pushed as-is.
pub fn job(queue: &str, name: &str, payload: &[u8]) -> NewJob {
    NewJob::new(queue, name, payload.to_vec())
}

/// A reserve request for `queues`.
pub fn request(queues: &[&str], lease: Duration, limit: usize) -> ReserveRequest {
    ReserveRequest::new(queues.iter().copied(), lease, limit)
}

/// Stamps one `#[tokio::test]` per conformance case, each on a fresh store from `$make`
/// (an expression evaluating to a future of `Option<Arc<dyn Storage>>`).
#[macro_export]
macro_rules! conformance {
    ($make:expr) => {
        $crate::conformance!(@cases $make;
            push_reserve_acknowledge,
            payload_bytes_round_trip,
            push_many_keeps_order,
            priority_and_fifo,
            delayed_availability,
            reserve_limit_and_batch,
            no_double_delivery,
            lease_expiry_and_recovery,
            stale_lease_is_refused,
            extend_keeps_reservation,
            retry_with_delay,
            release_refunds_attempt,
            fail_moves_to_failed_store,
            failed_store_operations,
            failed_prune,
            non_ascii_text_round_trips,
            sizes_queues_and_clear,
            capped_backlog,
            lock_mutual_exclusion,
            lock_owner_and_expiry,
            locks_are_listed_and_released_by_force,
            reserve_by_name,
            wait_wakes_on_push,
            oldest_available,
            settle_and_fetch_in_one_call,
            stale_leases_in_a_batch,
            push_effects_are_exactly_once,
            count_effects_are_exact,
            groups_are_listed_by_prefix,
            stats_history_adds_up_and_rolls_over,
            acks_with_effects_count_current_leases_only,
            unique_claims_follow_the_job,
            unique_claims_in_the_failed_store,
            clear_releases_claims,
            unique_claims_under_contention,
            replacing_pushes,
            list_jobs_by_state,
            settle_replaces_the_payload_of_a_job_put_back,
            parked_jobs_wait_for_their_lock,
            a_job_settled_with_effects_is_not_fetched_by_its_own_call,
            waiting_jobs_are_released_by_their_dependencies,
            skips_and_stale_steps_and_summed_dependencies,
            bad_effects_change_nothing,
            released_jobs_keep_their_claims,
            dependencies_under_contention,
            guarded_steps_apply_once,
            group_values_are_kept_with_the_step,
            track_finds_jobs_by_id,
            track_cancel_removes_or_marks,
            track_cancel_races_reserve,
            track_cancel_applies_effects_with_the_removal,
            track_records_and_fences,
            track_record_effects_apply_with_the_settle,
            worker_registry_entries_expire_and_leave,
            engine_runs_jobs_in_priority_order,
            engine_starts_jobs_in_store_order,
            engine_retries_with_backoff,
            engine_fails_after_tries,
            engine_bad_payloads_go_to_failed_store,
            engine_panicking_job_is_a_failed_attempt,
            engine_timeout_cancels_job,
            engine_without_overlapping,
            engine_without_overlapping_release_after,
            engine_without_overlapping_waits_for_the_key,
            engine_dead_worker_costs_an_attempt,
            engine_late_reservation_taken_by_another_is_not_run,
            engine_late_reservation_still_held_runs_once,
            engine_concurrency,
            concurrent_dispatches_each_get_their_own_id,
            engine_prefetch_keeps_priority,
            engine_adaptive_prefetch_leaves_long_jobs_to_others,
            engine_delayed_job_waits,
            engine_release_from_job,
            engine_graceful_stop_puts_back,
            engine_restart_signal,
            engine_restart_needs_a_first_reading,
            engine_once_finishes_a_long_job,
            engine_job_outliving_every_grace_ends_in_failed_store,
            engine_job_outlives_its_lease,
            engine_lost_lease_stops_the_job,
            engine_outage_stops_the_job_before_its_lease_ends,
            engine_unknown_jobs_wait_for_a_worker_that_knows_them,
            engine_run_one_name,
            engine_chain_runs_links_in_order,
            engine_chain_failure_skips_the_rest,
            engine_workflow_runs_a_diamond,
            engine_workflow_failure_skips_and_compensates,
            engine_workflow_refuses_bad_graphs,
            engine_workflow_nodes_read_outputs,
            engine_workflow_batch_nodes,
            engine_batch_then_and_finally,
            engine_batch_failures,
            engine_batch_cancel,
            engine_clear_ends_compositions,
            engine_batch_counts_running_members,
            engine_batch_open_in_chunks,
            engine_batch_members_add_members_and_see_cancel,
            engine_batch_retry,
            engine_batch_of_fifty_thousand,
            engine_unique_jobs,
            engine_unique_jobs_are_refused_in_compositions,
            engine_debounce,
            engine_debounce_max_wait,
            engine_rate_limits,
            engine_concurrency_limits,
            engine_queue_limits,
            engine_throttles_exceptions_share_their_circuit,
            engine_rate_limited_pauses_the_key,
            engine_paused_queues,
            engine_discarded_jobs,
            engine_encrypted_payloads,
            engine_secret_fields,
            engine_retried_jobs_are_resealed,
            engine_attempt_budget,
            engine_max_exceptions,
            engine_job_status,
            engine_job_status_names_its_group,
            engine_job_events,
            engine_cancelled_members_end_their_compositions,
            engine_cancel_running_jobs,
            engine_schedules_claim_each_tick_once,
            engine_stored_schedules,
            engine_schedules_buffer_one,
            engine_clear_ends_a_buffered_schedule_run,
            engine_stored_schedules_run_now,
            engine_worker_lists_itself,
            engine_worker_registry_failures_do_not_stop_the_worker,
        );
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                $crate::run_case(stringify!($case), || $make, $crate::cases::$case).await;
            }
        )*
    };
}
