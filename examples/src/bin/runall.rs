//! `runall`: the worker binary, linking the example jobs and every driver.
//!
//! ```text
//! runall work --queue high,default,low --concurrency 8
//! runall failed list
//! ```
//! An application makes its own in the same few lines, linking its own jobs.

// Linking a crate is what makes its #[derive(Job)] types and drivers known.
use queue_database as _;
use queue_examples as _;
use queue_file as _;
use queue_memcached as _;
use queue_redis as _;

fn main() -> std::process::ExitCode {
    queue_core::cli::Runner::new()
        .setup(queue_examples::listeners)
        .main()
}
