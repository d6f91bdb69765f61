//! `runall`: the worker binary, linking the example jobs and every driver.
//!
//! ```text
//! runall work --queue high,default,low --concurrency 8
//! runall failed list
//! runall serve                      # the web dashboard on http://127.0.0.1:8080/
//! runall top                        # a live terminal view of queues and workers
//! ```
//! An application makes its own in the same few lines, linking its own jobs.

use std::net::SocketAddr;
use std::process::ExitCode;

// Linking a crate is what makes its #[derive(Job)] types and drivers known.
use queue_database as _;
use queue_examples as _;
use queue_file as _;
use queue_memcached as _;
use queue_redis as _;

/// `runall serve`: the dashboard of `queue-dashboard`.
fn serve_command() -> clap::Command {
    clap::Command::new("serve")
        .about(
            "Serve the web dashboard: queues, jobs, failed jobs, with pause, resume, cancel, \
             retry and forget (127.0.0.1:8080 by default, read-only unless --token is given; \
             another address needs a token)",
        )
        .arg(
            clap::Arg::new("bind")
                .long("bind")
                .value_name("ADDR")
                .default_value("127.0.0.1:8080")
                .value_parser(clap::value_parser!(SocketAddr))
                .help("Address to listen on"),
        )
        .arg(
            clap::Arg::new("token")
                .long("token")
                .value_name("TOKEN")
                .env("RUNALL_DASHBOARD_TOKEN")
                .hide_env_values(true)
                .help(
                    "Token that opens full access (pages and actions): `Authorization: \
                     Bearer TOKEN`, or open the dashboard once as `/?token=TOKEN` (a cookie \
                     keeps it). Without any token the dashboard is read-only and binds only \
                     a loopback address",
                ),
        )
        .arg(
            clap::Arg::new("read-only-token")
                .long("read-only-token")
                .value_name("TOKEN")
                .env("RUNALL_DASHBOARD_READ_ONLY_TOKEN")
                .hide_env_values(true)
                .help(
                    "Token that opens read-only access: every page, no button, every action \
                     refused",
                ),
        )
}

/// `runall top`: the live terminal view of `queue-dashboard`.
fn top_command() -> clap::Command {
    clap::Command::new("top")
        .about(
            "A live terminal view, like sidekiqmon: each queue's waiting, delayed and running \
             jobs, the failed store, the live workers with their busy slots, and the rate of \
             jobs done and failed",
        )
        .arg(
            clap::Arg::new("every")
                .long("every")
                .value_name("DURATION")
                .default_value("2s")
                .value_parser(|s: &str| humantime::parse_duration(s).map_err(|e| e.to_string()))
                .help("Time between two reads (2s, 500ms)"),
        )
        .arg(
            clap::Arg::new("rounds")
                .long("rounds")
                .value_name("N")
                .value_parser(clap::value_parser!(u64).range(1..))
                .help("Stop after N reads (default: until interrupted)"),
        )
}

fn main() -> ExitCode {
    queue_core::cli::Runner::new()
        .setup(queue_examples::listeners)
        .command(serve_command(), |queue, args| async move {
            let mut options = queue_dashboard::ServeOptions::default();
            if let Some(bind) = args.get_one::<SocketAddr>("bind") {
                options.bind = *bind;
            }
            options.token = args.get_one::<String>("token").cloned();
            options.read_only_token = args.get_one::<String>("read-only-token").cloned();
            queue_dashboard::serve(queue, options).await?;
            Ok(ExitCode::SUCCESS)
        })
        .command(top_command(), |queue, args| async move {
            let mut options = queue_dashboard::TopOptions::default();
            if let Some(every) = args.get_one::<std::time::Duration>("every") {
                options.every = *every;
            }
            options.rounds = args.get_one::<u64>("rounds").copied();
            queue_dashboard::top(queue, options).await?;
            Ok(ExitCode::SUCCESS)
        })
        .main()
}
