//! The chaos harness: real worker processes against any driver URL, faults injected while
//! they work, and a checker that counts what went wrong.
//!
//! # What it does
//!
//! `chaos --url URL` runs scenarios against the store at `URL` (any driver linked into the
//! binaries: `sqlite://`, `postgres://`, `mysql://`, `redis://`, `file://`, `memcache://`).
//! Each scenario gets its own table (key prefix, directory), dispatches [`ChaosJob`]s, starts
//! `chaos-worker` processes (a `runall` binary built with
//! [`queue_core::cli::Runner`]), and injects its faults with `kill(1)`: SIGKILL, SIGSTOP and
//! SIGCONT, SIGTERM; scenario 6 restarts the backend itself.
//!
//! Every attempt of every job appends a START and an END line to a ledger file outside the
//! store ([`ledger`]): logical job id, attempt, worker pid, wall-clock times, outcome. After
//! the run the harness stops the workers, waits out the leases, drains the queue with one more
//! worker, and the [`check`]er reads the ledger, the faults, the workers' logs and the store:
//!
//! | figure | meaning |
//! |---|---|
//! | lost | dispatch returned Ok, the job never completed, and it is not in the failed store |
//! | duplicated | completed more than once |
//! | allowed | of those, explained by an earlier attempt that overlapped a kill, stop, lease lapse or backend restart |
//! | unexpected | anything else: wrong failures, missing failures, panics, ledger lines of unknown jobs |
//! | stuck | still reserved after the leases ran out and a final drain |
//! | refused | late acknowledges the store refused (fencing), counted from the workers' logs |
//! | recovery p99 | per scenario: kill to next start, stop to takeover, backend return to resume... |
//!
//! Results come as a table and as JSON ([`report::Summary`]).
//!
//! # The scenarios
//!
//! | # | name | what | holds when |
//! |---|---|---|---|
//! | 1 | `baseline` | 10,000 jobs, 4 workers | lost 0, duplicated 0, stuck 0 |
//! | 2 | `kill-storm` | 10,000 jobs of 20–200 ms, 4 workers, one SIGKILLed every 1.5–2.5 s and restarted, 20 tries each | lost 0, every duplicate allowed, stuck 0, orphan recovery p99 within lease + check interval |
//! | 3 | `graceful-stop` | SIGTERM of a busy worker every 2 s (grace 1 s, lease 30 s) | no duplicates; interrupted jobs run again at once, not after the lease |
//! | 4 | `crash-loop` | jobs that abort their worker | each in the failed store after its tries; other jobs flow |
//! | 5 | `stopped-worker` | SIGSTOP longer than the lease, then SIGCONT | late acknowledge refused; the job completed once by its new holder |
//! | 6 | `backend-restart` | the server restarted mid-run | every worker resumes within 5 s; lost 0 on durable drivers |
//! | 7 | `without-overlapping` | 8 workers, 1,000 jobs on one lock key; SIGKILL of the holder | 0 overlapping intervals; lock free within the lease |
//! | 8 | `poison` | 100 bad payloads among 10,000 good jobs, written straight into the store | each failed at once with a typed reason; 0 panics; good jobs done |
//! | 9 | `hanging-job` | a job that never returns, timeout 2 s | cancelled within 3 s, retried, failed after its tries |
//! | 10 | `chain-storm` | 400 chains of 20 links of 50–300 ms (short: 60 of 12), 4 workers, one SIGKILLed every 1.5–2.5 s and restarted (drivers with waiting jobs) | lost 0, every duplicate allowed, no link starts before the one before it succeeded, each chain's counters exact |
//! | 11 | `batch-storm` | 100 batches of 100 members of 20–200 ms (short: 12 of 60), each with `then` and `finally`, 4 workers, one SIGKILLed every 1.5–2.5 s and restarted (drivers with groups) | lost 0, every duplicate allowed, each batch's counters exact, no callback starts before its batch's last member succeeded |
//! | 12 | `limit-storm` | 3 keys of a `concurrent 2` limit, 400 jobs each, and 1,000 jobs on one key of a `20/s` limit (short: 40 per key and 120), 50–300 ms, limits from `[limits]` in job.toml, 4 workers × 4, one SIGKILLed every 1.5–2.5 s and restarted (the rate key on drivers with group counters; elsewhere a worker with a rate limit must refuse to start) | lost 0, every duplicate allowed, at most 2 bodies of a key at once (one cut short by a SIGKILL counted until its worker was reaped), every attempt number explained by kills (none counted for waiting), any k ≥ 4 starts of the rate key span at least (k − 1) × 50 ms less 400 ms and 50 ms per SIGKILL from a lease before them to the last |
//!
//! | 13 | `cancel-storm` | 2,000 jobs of 200–1,500 ms that stop when cancelled (short: 300), 4 workers keeping finished jobs, one SIGKILLed every 1.5–2.5 s and restarted, while the harness cancels a quarter of the jobs by id, every other cancel aimed at a running job (drivers with jobs by id) | lost 0, every duplicate allowed, no job removed by its cancel starts after it, no retried attempt of a job marked while running starts after the cancel, every cancelled job ends `cancelled` (or `succeeded` with a completed attempt: the cancel came too late), none in the failed store |
//!
//! `--short` is the CI form (2,000 jobs, a few faults, short leases); the full form is the
//! default. `tests/short.rs` runs the short form against every driver whose server is up.
//!
//! ```text
//! cargo build --release -p queue-chaos
//! target/release/chaos --url sqlite:///tmp/chaos/jobs.db --url redis://127.0.0.1:6379 \
//!     --restart-backend --json chaos.json
//! ```
//!
//! `--restart-backend` lets scenario 6 stop and start the server behind the URL (it always
//! starts it again); `--scenario NAME,...` picks scenarios; `--keep` keeps every ledger.
//! `RELIABILITY.md` at the repository root has the figures of the full form for each driver.

pub mod check;
pub mod harness;
pub mod job;
pub mod ledger;
pub mod report;

pub use harness::{run_scenario, Options, Scenario};
pub use job::{ChaosJob, Mode};
