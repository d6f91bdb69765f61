//! The command line behind `runall`: any application makes its own worker binary in a few
//! lines, linking its jobs.
//!
//! ```no_run
//! // src/bin/runall.rs of an application
//! use my_app as _; // link the crate whose #[derive(Job)] types the worker runs
//! # mod my_app {}
//!
//! fn main() -> std::process::ExitCode {
//!     queue_core::cli::Runner::new()
//!         .setup(|queue| {
//!             queue.listen("send-notification", |payload: serde_json::Value, _ctx| async move {
//!                 println!("notify {payload}");
//!                 Ok(())
//!             });
//!         })
//!         .main()
//! }
//! ```
//!
//! Commands (Laravel's and Rakit's names in parentheses):
//!
//! | command | what it does |
//! |---|---|
//! | `runall work` (the default) | run a worker (`queue:work`, `job:runall`): on `--queue`, on `queues` of `job.toml`, else on every queue the store holds (`high`, `default`, `low`, then the others by name) |
//! | `runall run NAME` | run a worker for jobs named NAME only (`job:run`) |
//! | `runall failed list` / `show ID` / `retry ID\|all` / `forget ID` / `flush` / `prune --older-than 7d` | the failed store (`queue:failed`, `queue:retry`, `queue:forget`, `queue:flush`, `queue:prune-failed`) |
//! | `runall size [QUEUE]` | jobs waiting, delayed, reserved (`queue:size`) |
//! | `runall migrate` | create the tables (`migrate`) |
//! | `runall table` | print the SQL that creates the tables, run nothing (`job:table`) |
//! | `runall health [--json]` | OK / WARNING / CRITICAL against thresholds, exit 0 / 1 / 2 (`queue:monitor`) |
//! | `runall stats [--watch]` | jobs per queue and state, failed jobs per job name and queue |
//! | `runall workers [--json]` | the live workers: host, pid, queues, busy slots, started, last beat (Sidekiq's Busy page, Horizon's supervisors) |
//! | `runall restart` | every worker finishes its jobs and exits (`queue:restart`) |
//! | `runall dispatch NAME JSON [--queue Q] [--delay 30s \| --at TIME]` | dispatch from the shell |
//! | `runall clear QUEUE [--force]` | delete a queue's waiting and delayed jobs (`queue:clear`); those of a batch, chain, workflow or `BufferOne` schedule end as cancelled, so what they belong to does not wait for them ([`Queue::clear`](crate::Queue::clear)) |
//! | `runall batch list` / `show ID [--watch]` / `cancel ID` / `retry ID` / `prune --older-than 7d [--unfinished]` | batches: progress, rate and ETA, cancel, `queue:retry-batch`, `queue:prune-batches` |
//! | `runall chain ID` / `runall workflow ID` | how far a chain or a workflow got (`runall workflow --prune-older-than 7d` deletes finished workflows and their outputs) |
//!
//! The connection: `--connection URL`, else `QUEUE_URL`, else `job.toml` (see
//! [`config`](crate::config)), else `sqlite://jobs.db`.

mod ops;
mod progress;
mod words;

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::dispatcher::QueueSettings;
use crate::error::{Error, Result};
use crate::job::{parse_duration, Backoff};
use crate::queue::Queue;
use crate::redact::redact_url;
use crate::storage::{self, ConnectOptions, FailedJob, JobId, PageRequest, StorageExt};
use crate::worker::{StopReason, WorkerOptions};
use words::{count, span};

#[derive(Debug, Parser)]
#[command(
    name = "runall",
    version,
    about = "Run and manage background-job workers"
)]
struct Cli {
    /// Connection URL (sqlite://jobs.db, postgres://..., mysql://..., redis://...,
    /// file:///path, memcache://host:port).
    #[arg(long, global = true, env = "QUEUE_URL", hide_env_values = true)]
    connection: Option<String>,
    /// Settings file.
    #[arg(long, global = true, env = "QUEUE_CONFIG", default_value = "job.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a worker (the default command). Without --queue, and without `queues` in
    /// job.toml, it takes jobs from every queue the store holds: high, default, low, then
    /// the others by name (new queues are picked up within a second).
    Work(WorkArgs),
    /// Run a worker that takes only jobs named NAME.
    Run {
        /// The job name.
        name: String,
        #[command(flatten)]
        work: WorkArgs,
    },
    /// Inspect and manage the failed store.
    #[command(subcommand)]
    Failed(FailedCommand),
    /// Show how many jobs each queue holds.
    Size {
        /// One queue (all queues if omitted).
        queue: Option<String>,
    },
    /// Create or upgrade the store's tables.
    Migrate,
    /// Print the SQL that creates the tables, for your own migration tool (Rakit's
    /// `job:table`); nothing is run.
    Table,
    /// Check the queues against thresholds: prints OK, WARNING or CRITICAL and exits 0, 1
    /// or 2 (for cron and container health checks).
    Health {
        /// Queues to check (default: every queue that holds jobs, and the configured ones).
        #[arg(long, value_delimiter = ',')]
        queue: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// What the store holds per queue and state, and its failed jobs by job name and queue.
    Stats {
        /// Refresh in place until interrupted.
        #[arg(long)]
        watch: bool,
        /// Refresh interval for --watch, as `2s`.
        #[arg(long, value_parser = parse_duration, default_value = "2s")]
        interval: Duration,
        /// Stop --watch after this many refreshes.
        #[arg(long, hide = true)]
        rounds: Option<u64>,
    },
    /// The workers of this store that are alive: host, pid, queues, busy slots, when each
    /// started and last reported (every 10 s; a worker that died drops out within 30 s).
    Workers {
        /// Print JSON, with the jobs each worker is running.
        #[arg(long)]
        json: bool,
    },
    /// The locks held (`without_overlapping`): key, holder (the lease token of the job
    /// holding it) and when it expires; `--release KEY` releases one whoever holds it.
    Locks {
        /// Release this lock by force (another job of its key may then start at once).
        #[arg(long, value_name = "KEY")]
        release: Option<String>,
    },
    /// Make every worker of this store finish its current jobs and exit (for deploys).
    Restart,
    /// Pause a queue for every worker of this store: its jobs stay queued, in order, until
    /// `resume` (jobs already running finish).
    Pause {
        /// The queue.
        queue: String,
    },
    /// Resume a paused queue.
    Resume {
        /// The queue.
        queue: String,
    },
    /// Show one job by id: its state, attempts, progress, output, last error and times.
    Job {
        /// The job's id, as a dispatch printed it.
        id: String,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job by id: a queued one never runs; a running one is stopped by its worker
    /// within a heartbeat.
    Cancel {
        /// The job's id.
        id: String,
    },
    /// Dispatch a job from the shell, checking the payload against the job type.
    Dispatch {
        /// The job name.
        name: String,
        /// The payload, as JSON.
        json: String,
        /// The queue (default: the job's).
        #[arg(long)]
        queue: Option<String>,
        /// Make it available after this long, as `30s`.
        #[arg(long, value_parser = parse_duration, conflicts_with = "at")]
        delay: Option<Duration>,
        /// Make it available at this time, as `2026-11-24T10:00:00Z`.
        #[arg(long, value_parser = parse_time)]
        at: Option<SystemTime>,
    },
    /// Show a batch's progress, or cancel it.
    #[command(subcommand)]
    Batch(BatchCommand),
    /// Encryption keys of encrypted payloads (`#[job(encrypted)]`).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The recurring schedules (`[[schedule]]` in job.toml, or added in code): list them,
    /// show one, pause, resume, run one now.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Show how far a chain got.
    Chain {
        /// The chain's id (what `Chain::dispatch` returned).
        id: String,
    },
    /// Show how far a workflow got, or delete finished ones.
    Workflow {
        /// The workflow's id (what `Workflow::dispatch` returned).
        #[arg(required_unless_present = "prune_older_than")]
        id: Option<String>,
        /// Delete the finished workflows dispatched longer ago than this (as `7d`), with
        /// their nodes' outputs, instead.
        #[arg(long, value_parser = parse_duration, conflicts_with = "id")]
        prune_older_than: Option<Duration>,
    },
    /// Delete the waiting and delayed jobs of a queue.
    Clear {
        /// The queue.
        queue: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        force: bool,
    },
    /// A command added by the binary with [`Runner::command`]: its index, and its arguments.
    #[command(skip)]
    Added(usize, clap::ArgMatches),
}

fn parse_time(text: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(text)
        .map_err(|e| format!("bad time `{text}` ({e}): use 2026-11-24T10:00:00Z"))
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Print a new random key, as `RUNALL_KEYS` takes it (`id:KEY`, comma-separated).
    Generate {
        /// The key's id.
        #[arg(default_value = "k1")]
        id: String,
    },
    /// How many stored jobs (queued, and in the failed store) each key id sealed: an old
    /// key can leave `RUNALL_KEYS` once it seals none.
    Status,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ScheduleCommand {
    /// Every schedule with its next and last tick.
    List,
    /// One schedule's state.
    Show {
        /// The schedule's id.
        id: String,
    },
    /// Stops claiming the schedule's ticks, on every worker, until `resume`.
    Pause {
        /// The schedule's id.
        id: String,
    },
    /// Claims the schedule's ticks again (missed ticks are caught up as it says).
    Resume {
        /// The schedule's id.
        id: String,
    },
    /// Removes a stored schedule (`Schedules::upsert`): no tick of it runs again. A schedule
    /// in code or in `job.toml` is removed by deleting it there.
    Remove {
        /// The schedule's id.
        id: String,
    },
    /// Pushes one run now, outside the ticks, of a schedule in code, in `job.toml` or stored
    /// (held back while a run is queued or running with overlap = skip; buffered until the
    /// running one ends with buffer_one, held back if one is buffered already).
    RunNow {
        /// The schedule's id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum BatchCommand {
    /// The batches in the store, by id, each with its progress.
    List {
        /// How many to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// A batch's counts of members (total, pending, succeeded, failed, cancelled), rate and
    /// ETA.
    Show {
        /// The batch's id (what `Batch::dispatch` returned).
        id: String,
        /// Redraw a progress bar until the batch finishes (or Ctrl-C).
        #[arg(long)]
        watch: bool,
        /// Refresh interval for --watch, as `1s`.
        #[arg(long, value_parser = parse_duration, default_value = "1s")]
        interval: Duration,
    },
    /// Cancel a batch: members not started never run; `finally` still runs.
    Cancel {
        /// The batch's id.
        id: String,
    },
    /// Run a batch's failed members again (`queue:retry-batch`); the callbacks wait
    /// for them and may run again.
    Retry {
        /// The batch's id.
        id: String,
    },
    /// Delete finished batches created longer ago than a duration (`queue:prune-batches`).
    Prune {
        /// As `7d`, `24h`.
        #[arg(long, value_parser = parse_duration, default_value = "7d")]
        older_than: Duration,
        /// Delete unfinished batches that old too; their callbacks not yet released never run.
        #[arg(long)]
        unfinished: bool,
    },
}

#[derive(Debug, Subcommand)]
enum FailedCommand {
    /// List failed jobs, newest first.
    List {
        /// How many to show.
        #[arg(long, default_value_t = 50)]
        limit: u64,
    },
    /// Show one failed job with its full error and payload.
    Show {
        /// The failed job's id.
        id: String,
    },
    /// Put failed jobs back on their queues: one id, several, or `all`.
    Retry {
        /// Ids, or `all`.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Delete one failed job.
    Forget {
        /// The failed job's id.
        id: String,
    },
    /// Delete every failed job.
    Flush,
    /// Delete failed jobs older than a duration.
    Prune {
        /// As `7d`, `24h`.
        #[arg(long, value_parser = parse_duration, default_value = "7d")]
        older_than: Duration,
    },
}

#[derive(Debug, Clone, Default, Args)]
struct WorkArgs {
    /// Queues in strict priority order, comma-separated. Default: `queues` of job.toml,
    /// else every queue the store holds, in the order high, default, low, then the others by
    /// name, read again every second so new queues are picked up (a store that cannot list
    /// its queues works `default`, and says so).
    #[arg(long, value_delimiter = ',')]
    queue: Vec<String>,
    /// Jobs to run at once in this process (at least 1).
    #[arg(long, value_parser = at_least_one::<usize>)]
    concurrency: Option<usize>,
    /// Attempts for jobs that do not set `tries`, the first one included: 1 runs a job once
    /// (Laravel's --tries).
    #[arg(long, alias = "tries", value_parser = at_least_one::<u32>)]
    retries: Option<u32>,
    /// Timeout of an attempt for jobs that do not set one, as `60s`.
    #[arg(long, value_parser = positive_duration)]
    timeout: Option<Duration>,
    /// Lease of a reservation (Laravel's retry_after), as `15s`.
    #[arg(long, alias = "retry-after", value_parser = positive_duration)]
    lease: Option<Duration>,
    /// Backoff for jobs that do not set one: `exponential`, `fixed:10s`, `1s,5s,30s`.
    #[arg(long, value_parser = Backoff::parse)]
    backoff: Option<Backoff>,
    /// How long to wait when no job is available, as `500ms` or `3s` (a bare number is
    /// milliseconds; default 1s).
    #[arg(long, value_parser = parse_sleep)]
    sleep: Option<Sleep>,
    /// How long a job whose `without_overlapping` lock is held (or that waits for a slot of a
    /// `concurrent` limit) waits before it is tried again, as `5s`; not counted as an attempt
    /// (default 500ms).
    #[arg(long, value_parser = positive_duration)]
    overlap_delay: Option<Duration>,
    /// Keep the status and output of succeeded jobs this long, readable by id (`runall job
    /// ID`), as `24h` (default: not kept; other ends are always kept, this long or a day).
    #[arg(long, value_parser = positive_duration)]
    keep_finished: Option<Duration>,
    /// Stop after this many jobs (0: no limit, as `max_job = 0` in `job.toml`).
    #[arg(long)]
    max_jobs: Option<u64>,
    /// Stop after running this long, as `1h`.
    #[arg(long, value_parser = parse_duration)]
    max_time: Option<Duration>,
    /// Stop when resident memory exceeds this many MB.
    #[arg(long)]
    memory: Option<u64>,
    /// Process one job and stop.
    #[arg(long)]
    once: bool,
    /// Stop when the queues are empty.
    #[arg(long)]
    stop_when_empty: bool,
    /// On SIGTERM or `runall restart`, how long running jobs may take to finish, as `30s`
    /// (stop conditions such as --once and --max-jobs let them finish however long).
    #[arg(long, value_parser = parse_duration)]
    grace: Option<Duration>,
    /// How long after its dispatch a job of a name this worker does not know (or of a newer
    /// envelope) is put back for another worker before it is failed, as `1h` (rolling
    /// deploys).
    #[arg(long, value_parser = parse_duration)]
    unknown_job_window: Option<Duration>,
    /// Reserved jobs held beyond the free slots, so a freed slot starts its next job at once
    /// (default: twice the jobs the slots finish during one fetch, up to 128 or --concurrency
    /// if larger; 0: off).
    #[arg(long)]
    prefetch: Option<usize>,
    /// Leave the schedules to other workers (they run in every worker by default; each tick
    /// is claimed by one).
    #[arg(long)]
    no_schedule: bool,
    /// Serve this worker's metrics as Prometheus text on this address, as
    /// `127.0.0.1:9091` (any path answers): jobs by outcome, queue and job name, their
    /// duration and wait, busy slots.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
}

/// `--sleep`: a duration with its unit, or a bare number of milliseconds (kept, to say
/// something when it looks like seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sleep {
    duration: Duration,
    /// The number, when it was given without a unit.
    bare: Option<u64>,
}

fn parse_sleep(text: &str) -> std::result::Result<Sleep, String> {
    match text.trim().parse::<u64>() {
        Ok(ms) => Ok(Sleep {
            duration: Duration::from_millis(ms),
            bare: Some(ms),
        }),
        Err(_) => Ok(Sleep {
            duration: parse_duration(text)?,
            bare: None,
        }),
    }
}

/// Below this, a bare number of milliseconds of idle wait was more likely meant as seconds.
const SUSPICIOUS_SLEEP_MS: u64 = 10;

/// A number that must be at least 1 (`--concurrency 0` would run nothing, `--retries 0`
/// would give a job no attempt).
fn at_least_one<T>(text: &str) -> std::result::Result<T, String>
where
    T: std::str::FromStr + PartialOrd + From<u8>,
    T::Err: std::fmt::Display,
{
    let n: T = text.trim().parse().map_err(|e| format!("{e}"))?;
    if n < T::from(1) {
        return Err("must be at least 1".into());
    }
    Ok(n)
}

/// A duration that must not be zero (a zero timeout or lease would fail every job).
fn positive_duration(text: &str) -> std::result::Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err("must be greater than zero".into()),
        d => Ok(d),
    }
}

type SetupFn = Box<dyn Fn(&Queue) + Send + Sync>;

/// What a command added with [`Runner::command`] returns.
pub type CommandResult = std::result::Result<ExitCode, crate::BoxError>;

type CommandFn = Box<
    dyn Fn(Queue, clap::ArgMatches) -> futures::future::BoxFuture<'static, CommandResult>
        + Send
        + Sync,
>;

/// Builds and runs the `runall` command line.
pub struct Runner {
    setup: Vec<SetupFn>,
    commands: Vec<(clap::Command, CommandFn)>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("setup", &self.setup.len())
            .field(
                "commands",
                &self
                    .commands
                    .iter()
                    .map(|(c, _)| c.get_name())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Default for Runner {
    fn default() -> Self {
        Self::new()
    }
}

impl Runner {
    /// A runner that knows the `#[derive(Job)]` types linked into the binary.
    pub fn new() -> Self {
        Runner {
            setup: Vec::new(),
            commands: Vec::new(),
        }
    }

    /// Adds a subcommand that lives outside this crate (the dashboard's `runall serve`):
    /// `command` is its name, help and arguments, as clap describes them; `run` gets the
    /// queue once it is connected (the `setup` closures have run) and the subcommand's
    /// arguments. `--connection` and `--config` apply to it as to every command. An error it
    /// returns is printed as `error: ...` with exit code 1.
    ///
    /// ```no_run
    /// use std::process::ExitCode;
    ///
    /// fn main() -> ExitCode {
    ///     let hello = clap::Command::new("hello")
    ///         .about("Print the driver's name")
    ///         .arg(clap::Arg::new("greeting").long("greeting").default_value("hello"));
    ///     queue_core::cli::Runner::new()
    ///         .command(hello, |queue, args| async move {
    ///             let greeting = args.get_one::<String>("greeting").cloned().unwrap_or_default();
    ///             println!("{greeting} from {}", queue.storage().capabilities().driver);
    ///             Ok(ExitCode::SUCCESS)
    ///         })
    ///         .main()
    /// }
    /// ```
    pub fn command<F, Fut>(mut self, command: clap::Command, run: F) -> Self
    where
        F: Fn(Queue, clap::ArgMatches) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = CommandResult> + Send + 'static,
    {
        self.commands.push((
            command,
            Box::new(move |queue, args| Box::pin(run(queue, args))),
        ));
        self
    }

    /// Runs `f` on the queue once it is connected: register listeners here.
    pub fn setup(mut self, f: impl Fn(&Queue) + Send + Sync + 'static) -> Self {
        self.setup.push(Box::new(f));
        self
    }

    /// Parses the process's arguments, runs the command on a new tokio runtime, and returns
    /// the exit code (0 on success, 1 on error).
    pub fn main(self) -> ExitCode {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: cannot start the tokio runtime: {e}");
                return ExitCode::FAILURE;
            }
        };
        runtime.block_on(self.run(std::env::args_os()))
    }

    /// Runs the command line given as `args` (the first is the program name).
    pub async fn run<I, T>(self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        quiet_job_panics();
        let cli = match self.parse(args) {
            Ok(cli) => cli,
            Err(e) => {
                let _ = e.print();
                return if e.use_stderr() {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
        };
        match self.execute(cli).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    }

    /// Parses the arguments: the built-in commands and those added with [`Runner::command`].
    fn parse<I, T>(&self, args: I) -> std::result::Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches};
        if self.commands.is_empty() {
            return Cli::try_parse_from(args);
        }
        let mut app = Cli::command();
        for (command, _) in &self.commands {
            app = app.subcommand(command.clone());
        }
        let matches = app.try_get_matches_from(args)?;
        let added = matches.subcommand().and_then(|(name, sub)| {
            let index = self
                .commands
                .iter()
                .position(|(c, _)| c.get_name() == name)?;
            Some((index, sub.clone()))
        });
        match added {
            Some((index, sub)) => Ok(Cli {
                connection: matches.get_one::<String>("connection").cloned(),
                config: matches
                    .get_one::<PathBuf>("config")
                    .cloned()
                    .unwrap_or_else(|| PathBuf::from("job.toml")),
                command: Some(Command::Added(index, sub)),
            }),
            None => Cli::from_arg_matches(&matches),
        }
    }

    async fn execute(self, cli: Cli) -> Result<ExitCode> {
        let config = Config::load(&cli.config)?;
        let progress_bar = matches!(
            &cli.command,
            Some(Command::Work(a)) | Some(Command::Run { work: a, .. }) if a.stop_when_empty
        ) && std::io::stderr().is_terminal()
            && std::env::var_os("QUEUE_LOG").is_none();
        // A progress bar and per-job log lines would garble each other on a terminal.
        init_logging(config.logging.unwrap_or(true) && !progress_bar);
        let url = match &cli.connection {
            Some(url) => url.clone(),
            None => config.connection_url()?,
        };
        let command = cli.command.unwrap_or(Command::Work(WorkArgs::default()));
        let options = ConnectOptions {
            table: config.table.clone(),
            failed_table: config.failed_table.clone(),
            migrate: !matches!(command, Command::Table),
        };
        if let Command::Keys(KeysCommand::Generate { id }) = &command {
            // Needs no store either.
            crate::KeyRing::new(id, [0; 32])?;
            println!("{id}:{}", crate::KeyRing::generate_key());
            return Ok(ExitCode::SUCCESS);
        }
        if let Command::Table = command {
            // Printing the schema needs no connection.
            println!("{}", storage::schema_sql(&url, &options)?);
            return Ok(ExitCode::SUCCESS);
        }
        // A worker listens for SIGTERM and SIGINT from before it connects, so a signal while
        // it is still connecting (a slow server, migrations) ends it cleanly, exit status 0,
        // instead of killing it; one that arrives later stops it gracefully as usual.
        let stop = matches!(command, Command::Work(_) | Command::Run { .. }).then(|| {
            let (tx, rx) = tokio::sync::watch::channel(false);
            let signal = crate::worker::stop_signal();
            tokio::spawn(async move {
                signal.await;
                let _ = tx.send(true);
            });
            rx
        });
        let connecting = storage::connect(&url, options);
        let connected = match &stop {
            Some(stop) => tokio::select! {
                connected = connecting => connected,
                () = signalled(stop.clone()) => {
                    tracing::info!("stop signal received while connecting: exiting");
                    println!("worker stopped (signal before it started): 0 processed, 0 retried, 0 failed, 0 put back");
                    return Ok(ExitCode::SUCCESS);
                }
            },
            None => connecting.await,
        };
        // A store that cannot be reached is not a configuration error: the driver's own
        // error (connection refused, bad password, unknown database) says what happened.
        let storage = connected.map_err(|e| match e {
            Error::Backend { .. } => Error::Connect {
                url: redact_url(&url),
                source: Box::new(e),
            },
            other => other,
        })?;
        let mut settings = QueueSettings::default();
        if let Some(max) = config.max_payload {
            settings.max_payload = max;
        }
        if let Some(limits) = &config.max_queue_size {
            settings.max_queue_size = limits.clone();
        }
        let queue = Queue::with_settings(storage.clone(), settings);
        for setup in &self.setup {
            setup(&queue);
        }
        for schedule in config.schedule.iter().flatten() {
            let job = &schedule.job;
            if crate::registry::find(job).is_none() && !queue.listener_names().contains(job) {
                return Err(Error::Config(format!(
                    "schedule {}: unknown job `{job}`: no #[derive(Job)] type and no listener \
                     has this name",
                    schedule.id.as_deref().unwrap_or(job)
                )));
            }
            queue.schedule(schedule.to_schedule()?)?;
        }
        Queue::set_default(queue.clone());

        let mut out = std::io::stdout().lock();
        match command {
            Command::Work(args) => {
                tracing::info!(connection = %redact_url(&url), "connected");
                work(&queue, &config, args, None, progress_bar, stop).await?;
            }
            Command::Run { name, work: args } => {
                if crate::registry::find(&name).is_none() && !queue.listener_names().contains(&name)
                {
                    return Err(Error::UnknownJob { name });
                }
                work(&queue, &config, args, Some(name), progress_bar, stop).await?;
            }
            Command::Keys(KeysCommand::Status) => {
                ops::keys_status(storage.as_ref(), &mut out).await?;
            }
            Command::Table | Command::Keys(KeysCommand::Generate { .. }) => {}
            Command::Migrate => {
                // Connecting created what was missing.
                let _ = writeln!(out, "migrated {}", redact_url(&url));
            }
            Command::Size { queue: one } => {
                let inspect = storage.inspect()?;
                let queues = match one {
                    Some(q) => vec![q],
                    None => inspect.queues().await?,
                };
                // Stores without group counters cannot pause queues: none is paused.
                let paused = queue.paused().await.unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{:<20} {:>9} {:>9} {:>9}",
                    "queue", "waiting", "delayed", "reserved"
                );
                for q in queues {
                    let s = inspect.size(&q).await?;
                    let mark = if paused.contains(&q) { "  PAUSED" } else { "" };
                    let _ = writeln!(
                        out,
                        "{:<20} {:>9} {:>9} {:>9}{mark}",
                        q, s.waiting, s.delayed, s.reserved
                    );
                }
                let _ = writeln!(out, "failed: {}", storage.failed_store()?.count().await?);
            }
            Command::Failed(cmd) => failed(&storage, cmd, &mut out).await?,
            Command::Health {
                queue: queues,
                json,
            } => {
                let mut warnings = ops::late_schedules(&queue).await?;
                // A queue paused and forgotten stops its work as surely as a dead worker.
                for name in queue.paused().await.unwrap_or_default() {
                    warnings.push(format!(
                        "queue {name} is paused: no worker takes its jobs (`runall resume {name}`)"
                    ));
                }
                let status =
                    ops::health(&*storage, &config, &queues, &warnings, json, &mut out).await?;
                return Ok(ExitCode::from(status.exit_code()));
            }
            Command::Stats {
                watch,
                interval,
                rounds,
            } => {
                if watch {
                    drop(out);
                    ops::watch_stats(&*storage, interval, rounds).await?;
                } else {
                    ops::stats(&*storage, &mut out).await?;
                }
            }
            Command::Pause { queue: name } => {
                if queue.pause(&name).await? {
                    let _ = writeln!(out, "queue {name} paused: workers take none of its jobs from within a second, until `runall resume {name}`");
                } else {
                    let _ = writeln!(out, "queue {name} was paused already");
                }
            }
            Command::Resume { queue: name } => {
                if queue.resume(&name).await? {
                    let _ = writeln!(out, "queue {name} resumed");
                } else {
                    let _ = writeln!(out, "queue {name} was not paused");
                }
            }
            Command::Job { id, json } => {
                ops::show_job(&queue, &JobId(id), json, &mut out).await?;
            }
            Command::Cancel { id } => {
                ops::cancel_job(&queue, &JobId(id), &mut out).await?;
            }
            Command::Workers { json } => {
                ops::workers(&queue, json, &mut out).await?;
            }
            Command::Locks { release } => {
                ops::locks(&queue, release, &mut out).await?;
            }
            Command::Restart => {
                storage.control()?.request_restart().await?;
                let _ = writeln!(out, "restart signal sent: every worker of this store finishes its current jobs and exits within a few seconds");
            }
            Command::Dispatch {
                name,
                json,
                queue: on,
                delay,
                at,
            } => {
                let args = ops::DispatchArgs {
                    name,
                    json,
                    queue: on,
                    delay,
                    at,
                };
                ops::dispatch(&queue, args, &mut out).await?;
            }
            Command::Added(index, args) => {
                drop(out);
                let Some((_, run)) = self.commands.get(index) else {
                    return Ok(ExitCode::FAILURE);
                };
                return Ok(match run(queue.clone(), args).await {
                    Ok(code) => code,
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::FAILURE
                    }
                });
            }
            Command::Clear { queue: name, force } => {
                ops::clear(&queue, &name, force, &mut out).await?
            }
            Command::Schedule(command) => ops::schedule(&queue, command, &mut out).await?,
            Command::Batch(BatchCommand::List { limit }) => {
                ops::batch_list(&queue, limit, &mut out).await?
            }
            Command::Batch(BatchCommand::Show {
                id,
                watch,
                interval,
            }) => {
                let id = crate::BatchId(id);
                if watch {
                    drop(out);
                    ops::batch_watch(&queue, &id, interval).await?;
                    return Ok(ExitCode::SUCCESS);
                } else {
                    let status = crate::Batch::status(&queue, &id).await?;
                    let running = ops::running(&queue, &id).await;
                    let _ = writeln!(out, "{}", ops::batch_line(&id, &status, running));
                }
            }
            Command::Batch(BatchCommand::Prune {
                older_than,
                unfinished,
            }) => {
                let before = SystemTime::now()
                    .checked_sub(older_than)
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                let pruned = crate::Batch::prune(&queue, before, unfinished).await?;
                let (one, many) = if unfinished {
                    ("batch", "batches")
                } else {
                    ("finished batch", "finished batches")
                };
                let _ = writeln!(
                    out,
                    "pruned {} created more than {} ago",
                    count(pruned, one, many),
                    span(older_than)
                );
            }
            Command::Batch(BatchCommand::Retry { id }) => {
                let n = crate::Batch::retry(&queue, &crate::BatchId(id.clone())).await?;
                let _ = writeln!(
                    out,
                    "batch {id}: {n} failed member{} back in {}",
                    if n == 1 { "" } else { "s" },
                    if n == 1 { "its queue" } else { "their queues" }
                );
            }
            Command::Batch(BatchCommand::Cancel { id }) => {
                let batch = crate::BatchId(id.clone());
                crate::Batch::status(&queue, &batch).await?;
                let removed = crate::Batch::cancel(&queue, &batch).await?;
                let _ = writeln!(
                    out,
                    "batch {id} cancelled: its members not started will not run \
                     ({removed} removed from their queues now, counted cancelled)"
                );
            }
            Command::Chain { id } => {
                let s = crate::Chain::status(&queue, &crate::ChainId(id.clone())).await?;
                let _ = writeln!(
                    out,
                    "chain {id}: {}, {} succeeded, {} failed, {} skipped{}",
                    count(s.links, "link", "links"),
                    s.succeeded,
                    s.failed,
                    s.skipped,
                    if s.is_finished() { " (finished)" } else { "" }
                );
            }
            Command::Workflow {
                prune_older_than: Some(older_than),
                ..
            } => {
                let before = SystemTime::now()
                    .checked_sub(older_than)
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                let pruned = crate::Workflow::prune(&queue, before).await?;
                let _ = writeln!(
                    out,
                    "pruned {} dispatched more than {} ago",
                    count(pruned, "finished workflow", "finished workflows"),
                    span(older_than)
                );
            }
            Command::Workflow { id, .. } => {
                let id = id.unwrap_or_default();
                let s = crate::Workflow::status(&queue, &crate::WorkflowId(id.clone())).await?;
                let _ = writeln!(
                    out,
                    "workflow {id}: {}, {} succeeded, {} failed, {} skipped{}",
                    count(s.nodes, "node", "nodes"),
                    s.succeeded,
                    s.failed,
                    s.skipped,
                    if s.is_finished() { " (finished)" } else { "" }
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// Runs the `runall` command line of this binary: `fn main() -> ExitCode { queue_core::cli::main() }`.
pub fn main() -> ExitCode {
    Runner::new().main()
}

/// Installs (once) a panic hook that leaves a panic in a job's body to the worker, which
/// catches it and reports it in its own log line (with where it happened), so it is not
/// printed twice, the second time between the log lines. Every other panic, a task a job
/// spawned included, goes to the hook that was there before; so does every panic when
/// `RUST_BACKTRACE` asks for backtraces.
fn quiet_job_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        let backtraces = std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0");
        std::panic::set_hook(Box::new(move |info| {
            let location = info.location().map(ToString::to_string);
            if backtraces || !crate::worker::job_body_panicked(location) {
                previous(info);
            }
        }));
    });
}

fn init_logging(verbose: bool) {
    let default = if verbose { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("QUEUE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // The `job` span (OpenTelemetry's fields, for an exporter) is left out of these lines,
    // which name the job themselves.
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let no_job_span = tracing_subscriber::filter::filter_fn(|meta| {
        !(meta.is_span() && meta.name() == "job" && meta.target().starts_with("queue_core"))
    });
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_filter(no_job_span)
        .with_filter(filter);
    let _ = tracing_subscriber::registry().with(lines).try_init();
}

/// The worker options from flags, then `job.toml`, then defaults, with warnings about
/// values that look like mistakes.
fn worker_options(
    config: &Config,
    args: &WorkArgs,
    only: Option<String>,
) -> (WorkerOptions, Vec<String>) {
    let mut warnings = Vec::new();
    let mut o = WorkerOptions::default();
    let queues: Vec<String> = args
        .queue
        .iter()
        .map(|q| q.trim().to_owned())
        .filter(|q| !q.is_empty())
        .collect();
    if !queues.is_empty() {
        o.queues = queues;
    } else if let Some(queues) = &config.queues {
        o.queues = queues.clone();
    } else {
        // Rakit's `job:runall`: every queue the store holds (`default` when it cannot
        // list them).
        o.all_queues = true;
    }
    // Both are refused below 1 when parsed (the flag) or loaded (job.toml).
    if let Some(n) = args.concurrency.or(config.concurrency) {
        o.concurrency = n;
    }
    if let Some(n) = args.retries.or(config.max_retries) {
        o.tries = n;
    }
    if let Some(t) = args.timeout.or(config.timeout()) {
        o.timeout = t;
    }
    if let Some(l) = args.lease.or(config.retry_after()) {
        o.lease = l;
    }
    if let Some(b) = args.backoff.clone().or(config.backoff()) {
        o.backoff = b;
    }
    match (args.sleep, config.sleep()) {
        (Some(sleep), _) => {
            o.sleep = sleep.duration;
            if let Some(n) = sleep.bare.filter(|n| (1..SUSPICIOUS_SLEEP_MS).contains(n)) {
                warnings.push(format!(
                    "--sleep {n} is {n} milliseconds (a bare number is milliseconds); for \
                     seconds write --sleep {n}s"
                ));
            }
        }
        (None, Some(sleep)) => {
            o.sleep = sleep;
            if let Some(n) = config
                .sleep_ms
                .filter(|n| (1..SUSPICIOUS_SLEEP_MS).contains(n))
            {
                warnings.push(format!(
                    "`sleep_ms = {n}` in job.toml is {n} milliseconds; for seconds write \
                     `sleep = \"{n}s\"`"
                ));
            }
        }
        (None, None) => {}
    }
    if let Some(d) = args.keep_finished.or(config.keep_finished()) {
        o.keep_finished = Some(d);
    }
    if let Some(d) = args.overlap_delay.or(config.overlap_delay()) {
        o.lock_retry = d;
    }
    // 0 means no limit, from the flag as from `job.toml` (Laravel's `--max-jobs=0`, Rakit's
    // `max_job = 0`).
    o.max_jobs = match args.max_jobs {
        Some(0) => None,
        Some(n) => Some(n),
        None => config.max_job.filter(|n| *n > 0),
    };
    o.max_time = args.max_time;
    o.memory_mb = args.memory;
    o.once = args.once;
    o.stop_when_empty = args.stop_when_empty;
    o.schedules = !args.no_schedule;
    if let Some(g) = args.grace.or(config.grace()) {
        o.grace = g;
    }
    if let Some(w) = args.unknown_job_window.or(config.unknown_job_window()) {
        o.unknown_job_window = w;
    }
    o.prefetch = args.prefetch.or(config.prefetch);
    o.limits = config.limits.clone().unwrap_or_default();
    o.queue_limits = config.queue_limits.clone().unwrap_or_default();
    o.only = only;
    (o, warnings)
}

/// Completes once the stop flag is set (never, if its sender is gone without setting it).
async fn signalled(mut stop: tokio::sync::watch::Receiver<bool>) {
    if stop.wait_for(|set| *set).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Installs the Prometheus exporter as this process's metrics recorder, serving on `addr`
/// (`runall work --metrics-addr`), with the histograms' buckets of the worker's metrics.
fn serve_metrics(addr: std::net::SocketAddr) -> Result<()> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let buckets = crate::worker::METRIC_BUCKETS;
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
        .and_then(|builder| builder.install())
        .map_err(|e| Error::Config(format!("cannot serve metrics on {addr}: {e}")))?;
    tracing::info!(%addr, "serving metrics (Prometheus text)");
    Ok(())
}

async fn work(
    queue: &Queue,
    config: &Config,
    args: WorkArgs,
    only: Option<String>,
    progress_bar: bool,
    stop: Option<tokio::sync::watch::Receiver<bool>>,
) -> Result<()> {
    if let Some(addr) = args.metrics_addr {
        serve_metrics(addr)?;
    }
    let (options, warnings) = worker_options(config, &args, only);
    for warning in warnings {
        eprintln!("warning: {warning}");
    }
    // The bar counts what every queue holds when the worker takes every queue.
    let queues = (!options.all_queues).then(|| options.queues.clone());
    let worker = queue.worker(options);
    let bar = progress_bar.then(|| {
        tokio::spawn(progress::draw(
            queue.storage().clone(),
            queues,
            worker.progress_handle(),
        ))
    });
    let summary = match stop {
        Some(stop) => worker.run_until(signalled(stop)).await,
        None => worker.run_until_signal().await,
    };
    if let Some(bar) = bar {
        bar.abort();
        eprintln!();
    }
    let summary = summary?;
    let why = match summary.reason {
        // The command line stops its worker only on SIGTERM or SIGINT.
        StopReason::Stopped => "stopped by signal",
        StopReason::Empty => "queues empty",
        StopReason::Once => "--once",
        StopReason::MaxJobs => "--max-jobs reached",
        StopReason::MaxTime => "--max-time reached",
        StopReason::Memory => "--memory exceeded",
        StopReason::Restart => "restart signal",
    };
    let peak = crate::worker::peak_memory_mb()
        .map(|mb| format!(", peak memory {mb} MB"))
        .unwrap_or_default();
    println!(
        "worker stopped ({why}): {} processed, {} retried, {} failed, {} put back{peak}",
        summary.processed, summary.retried, summary.failed, summary.released
    );
    Ok(())
}

async fn failed(
    storage: &std::sync::Arc<dyn storage::Storage>,
    cmd: FailedCommand,
    out: &mut impl std::io::Write,
) -> Result<()> {
    let store = storage.failed_store()?;
    let not_found = |id: String| Error::NotFound {
        what: "failed job",
        id,
    };
    match cmd {
        FailedCommand::List { limit } => {
            let jobs = store
                .list(PageRequest::first(
                    usize::try_from(limit).unwrap_or(usize::MAX),
                ))
                .await?
                .items;
            let total = store.count().await?;
            let _ = writeln!(
                out,
                "{:<8} {:<10} {:<20} {:>8}  {:<20}  error",
                "id", "queue", "name", "attempts", "failed at"
            );
            for job in &jobs {
                let _ = writeln!(
                    out,
                    "{:<8} {:<10} {:<20} {:>8}  {:<20}  {}",
                    job.id,
                    job.queue,
                    job.name,
                    job.attempts,
                    format_time(job.failed_at),
                    one_line(&job.error, 80)
                );
            }
            let _ = writeln!(
                out,
                "{} of {}",
                jobs.len(),
                count(total, "failed job", "failed jobs")
            );
        }
        FailedCommand::Show { id } => match store.get(&id).await? {
            Some(job) => {
                let _ = out.write_all(describe(&job).as_bytes());
            }
            None => return Err(not_found(id)),
        },
        FailedCommand::Retry { ids } => {
            let ids = if ids.iter().any(|i| i == "all") {
                let mut all = Vec::new();
                let mut page = PageRequest::first(500);
                loop {
                    let got = store.list(page).await?;
                    all.extend(got.items.into_iter().map(|f| f.id));
                    match got.next {
                        Some(next) => page = PageRequest::after(next, 500),
                        None => break,
                    }
                }
                all
            } else {
                ids
            };
            let mut retried = 0u64;
            let mut missing = Vec::new();
            for id in &ids {
                // A batch member goes back with its batch's counts and callbacks.
                let pushed = Queue::from_arc(storage.clone()).retry_failed(id).await?;
                match pushed {
                    Some(storage::Pushed::Created(new_id)) => {
                        retried += 1;
                        let _ =
                            writeln!(out, "failed job {id} is back on its queue as job {new_id}");
                    }
                    Some(other) => {
                        let _ = writeln!(
                            out,
                            "failed job {id} stays: its unique key is held by job {}",
                            other.id()
                        );
                    }
                    None => missing.push(id.clone()),
                }
            }
            let _ = writeln!(out, "{} retried", count(retried, "job", "jobs"));
            if !missing.is_empty() {
                return Err(not_found(missing.join(", ")));
            }
        }
        FailedCommand::Forget { id } => {
            if store.forget(&id).await? {
                let _ = writeln!(out, "failed job {id} deleted");
            } else {
                return Err(not_found(id));
            }
        }
        FailedCommand::Flush => {
            let n = store.flush().await?;
            let _ = writeln!(out, "{} deleted", count(n, "failed job", "failed jobs"));
        }
        FailedCommand::Prune { older_than } => {
            let before = SystemTime::now()
                .checked_sub(older_than)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let n = store.prune(before).await?;
            let _ = writeln!(
                out,
                "{} older than {} deleted",
                count(n, "failed job", "failed jobs"),
                span(older_than)
            );
        }
    }
    Ok(())
}

fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn one_line(text: &str, max: usize) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.chars().count() > max {
        let cut: String = line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        line
    }
}

fn describe(job: &FailedJob) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "id:        {}", job.id);
    let _ = writeln!(s, "job id:    {}", job.job_id);
    let _ = writeln!(s, "queue:     {}", job.queue);
    let _ = writeln!(s, "name:      {}", job.name);
    let _ = writeln!(s, "attempts:  {}", job.attempts);
    let _ = writeln!(s, "failed at: {}", format_time(job.failed_at));
    let _ = writeln!(s, "error:\n{}", job.error);
    let _ = writeln!(s, "payload:\n{}", String::from_utf8_lossy(&job.payload));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work_args(args: &[&str]) -> std::result::Result<WorkArgs, clap::Error> {
        let cli = Cli::try_parse_from(["runall", "work"].iter().chain(args))?;
        match cli.command {
            Some(Command::Work(args)) => Ok(args),
            other => panic!("not a work command: {other:?}"),
        }
    }

    #[test]
    fn sleep_takes_units_and_a_bare_number_is_milliseconds() {
        for (text, ms, bare) in [
            ("3s", 3000, None),
            ("500ms", 500, None),
            ("1m", 60_000, None),
            ("250", 250, Some(250)),
            ("3", 3, Some(3)),
        ] {
            let sleep = parse_sleep(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(sleep.duration, Duration::from_millis(ms), "{text}");
            assert_eq!(sleep.bare, bare, "{text}");
        }
        assert!(parse_sleep("3 parsecs").is_err());
    }

    #[test]
    fn a_suspicious_sleep_draws_a_warning() {
        let config = Config::default();
        let (o, warnings) = worker_options(&config, &work_args(&["--sleep", "3"]).unwrap(), None);
        assert_eq!(o.sleep, Duration::from_millis(3));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("--sleep 3s"), "{warnings:?}");
        for quiet in ["3s", "50", "0", "500ms"] {
            let (_, warnings) =
                worker_options(&config, &work_args(&["--sleep", quiet]).unwrap(), None);
            assert!(warnings.is_empty(), "{quiet}: {warnings:?}");
        }
        let config = Config::parse("sleep_ms = 2\n").unwrap();
        let (o, warnings) = worker_options(&config, &work_args(&[]).unwrap(), None);
        assert_eq!(o.sleep, Duration::from_millis(2));
        assert!(warnings[0].contains("sleep = \"2s\""), "{warnings:?}");
        let config = Config::parse("sleep = '2s'\n").unwrap();
        let (o, warnings) = worker_options(&config, &work_args(&[]).unwrap(), None);
        assert_eq!(o.sleep, Duration::from_secs(2));
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn zero_concurrency_or_retries_is_refused() {
        for (flag, value) in [("--concurrency", "0"), ("--retries", "0"), ("--tries", "0")] {
            let e = work_args(&[flag, value]).expect_err(flag).to_string();
            assert!(e.contains("must be at least 1"), "{flag}: {e}");
        }
        let args = work_args(&["--concurrency", "4", "--retries", "1"]).unwrap();
        let (o, _) = worker_options(&Config::default(), &args, None);
        assert_eq!((o.concurrency, o.tries), (4, 1));
    }

    #[test]
    fn max_jobs_zero_means_no_limit_from_the_flag_as_from_job_toml() {
        let config = Config::parse("max_job = 0\n").unwrap();
        let (o, _) = worker_options(&config, &work_args(&[]).unwrap(), None);
        assert_eq!(o.max_jobs, None);
        let config = Config::parse("max_job = 50\n").unwrap();
        let (o, _) = worker_options(&config, &work_args(&["--max-jobs", "0"]).unwrap(), None);
        assert_eq!(o.max_jobs, None, "the flag's 0 overrides job.toml's limit");
        let (o, _) = worker_options(&config, &work_args(&[]).unwrap(), None);
        assert_eq!(o.max_jobs, Some(50));
        let (o, _) = worker_options(&config, &work_args(&["--max-jobs", "5"]).unwrap(), None);
        assert_eq!(o.max_jobs, Some(5));
    }

    #[test]
    fn keep_finished_from_the_flag_or_job_toml() {
        let (o, _) = worker_options(&Config::default(), &work_args(&[]).unwrap(), None);
        assert_eq!(o.keep_finished, None);
        let config = Config::parse("keep_finished = '2h'\n").unwrap();
        let (o, _) = worker_options(&config, &work_args(&[]).unwrap(), None);
        assert_eq!(o.keep_finished, Some(Duration::from_secs(7200)));
        let args = work_args(&["--keep-finished", "10m"]).unwrap();
        let (o, _) = worker_options(&config, &args, None);
        assert_eq!(o.keep_finished, Some(Duration::from_secs(600)));
        assert!(work_args(&["--keep-finished", "0s"]).is_err());
        assert!(Config::parse("keep_finished = 'soon'\n").is_err());
    }

    #[test]
    fn overlap_delay_from_the_flag_or_job_toml() {
        let config = Config::parse("overlap_delay = '2s'\n").unwrap();
        let (o, _) = worker_options(&config, &work_args(&[]).unwrap(), None);
        assert_eq!(o.lock_retry, Duration::from_secs(2));
        let args = work_args(&["--overlap-delay", "5s"]).unwrap();
        let (o, _) = worker_options(&config, &args, None);
        assert_eq!(o.lock_retry, Duration::from_secs(5));
        assert!(work_args(&["--overlap-delay", "0s"]).is_err());
    }

    #[test]
    fn no_queue_means_every_queue() {
        let (o, _) = worker_options(&Config::default(), &work_args(&[]).unwrap(), None);
        assert!(o.all_queues);
        let args = work_args(&["--queue", "high,low"]).unwrap();
        let (o, _) = worker_options(&Config::default(), &args, None);
        assert!(!o.all_queues);
        assert_eq!(o.queues, ["high", "low"]);
        let config = Config::parse("queues = ['mail']\n").unwrap();
        let (o, _) = worker_options(&config, &work_args(&[]).unwrap(), None);
        assert!(!o.all_queues);
        assert_eq!(o.queues, ["mail"]);
    }
}
