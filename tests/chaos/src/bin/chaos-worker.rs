//! `chaos-worker`: a `runall` worker that knows the chaos jobs and every driver. The `chaos`
//! harness starts it; it takes every `runall` command and flag.
//!
//! ```text
//! CHAOS_LEDGER=/tmp/ledger.jsonl chaos-worker --connection sqlite:///tmp/jobs.db work --queue chaos
//! ```

// Linking a crate is what makes its #[derive(Job)] types and its drivers known.
use queue_chaos as _;
use queue_database as _;
use queue_file as _;
use queue_memcached as _;
use queue_redis as _;

fn main() -> std::process::ExitCode {
    queue_core::cli::Runner::new().main()
}
