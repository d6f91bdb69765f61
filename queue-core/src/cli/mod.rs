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
//! | `runall work` (the default) | run a worker (`queue:work`, `job:runall`) |
//! | `runall run NAME` | run a worker for jobs named NAME only (`job:run`) |
//! | `runall failed list` / `show ID` / `retry ID\|all` / `forget ID` / `flush` / `prune --older-than 7d` | the failed store (`queue:failed`, `queue:retry`, `queue:forget`, `queue:flush`, `queue:prune-failed`) |
//! | `runall size [QUEUE]` | jobs waiting, delayed, reserved (`queue:size`) |
//! | `runall migrate` | create the tables (`migrate`) |
//! | `runall table` | print the SQL that creates the tables, run nothing (`job:table`) |
//! | `runall health [--json]` | OK / WARNING / CRITICAL against thresholds, exit 0 / 1 / 2 (`queue:monitor`) |
//! | `runall stats [--watch]` | jobs per queue and state, failed jobs per job name and queue |
//! | `runall restart` | every worker finishes its jobs and exits (`queue:restart`) |
//! | `runall dispatch NAME JSON [--queue Q] [--delay 30s \| --at TIME]` | dispatch from the shell |
//! | `runall clear QUEUE [--force]` | delete a queue's waiting jobs (`queue:clear`) |
//! | `runall batch list` / `show ID [--watch]` / `cancel ID` / `retry ID` / `prune --older-than 7d [--unfinished]` | batches: progress, rate and ETA, cancel, `queue:retry-batch`, `queue:prune-batches` |
//! | `runall chain ID` / `runall workflow ID` | how far a chain or a workflow got |
//!
//! The connection: `--connection URL`, else `QUEUE_URL`, else `job.toml` (see
//! [`config`](crate::config)), else `sqlite://jobs.db`.

mod ops;
mod progress;

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
use crate::storage::{self, ConnectOptions, FailedJob, PageRequest, StorageExt};
use crate::worker::{StopReason, WorkerOptions};

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
    /// Run a worker (the default command).
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
    /// Show how far a workflow got.
    Workflow {
        /// The workflow's id (what `Workflow::dispatch` returned).
        id: String,
    },
    /// Delete the waiting and delayed jobs of a queue.
    Clear {
        /// The queue.
        queue: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        force: bool,
    },
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
    /// Pushes one run now, outside the ticks (held back while a run is queued or running,
    /// unless the schedule allows overlap).
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
    /// Queues in strict priority order, comma-separated.
    #[arg(long, value_delimiter = ',')]
    queue: Vec<String>,
    /// Jobs to run at once in this process.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Attempts for jobs that do not set `tries` (Laravel's --tries).
    #[arg(long, alias = "tries")]
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
    /// Milliseconds to wait when no job is available.
    #[arg(long)]
    sleep: Option<u64>,
    /// Stop after this many jobs.
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
}

/// A duration that must not be zero (a zero timeout or lease would fail every job).
fn positive_duration(text: &str) -> std::result::Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err("must be greater than zero".into()),
        d => Ok(d),
    }
}

type SetupFn = Box<dyn Fn(&Queue) + Send + Sync>;

/// Builds and runs the `runall` command line.
pub struct Runner {
    setup: Vec<SetupFn>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("setup", &self.setup.len())
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
        Runner { setup: Vec::new() }
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
        let cli = match Cli::try_parse_from(args) {
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
        let storage = connected
            .map_err(|e| Error::Config(format!("cannot connect to {}: {e}", redact_url(&url))))?;
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
            Command::Table | Command::Keys(_) => {}
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
            Command::Clear { queue: name, force } => {
                ops::clear(&*storage, &name, force, &mut out).await?
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
                    let _ = writeln!(out, "{}", ops::batch_line(&id, &status));
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
                let _ = writeln!(
                    out,
                    "pruned {pruned} {}batches created more than {} ago",
                    if unfinished { "" } else { "finished " },
                    humantime::format_duration(older_than)
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
                crate::Batch::cancel(&queue, &batch).await?;
                let _ = writeln!(
                    out,
                    "batch {id} cancelled: its members not started will not run"
                );
            }
            Command::Chain { id } => {
                let s = crate::Chain::status(&queue, &crate::ChainId(id.clone())).await?;
                let _ = writeln!(
                    out,
                    "chain {id}: {} links, {} succeeded, {} failed, {} skipped{}",
                    s.links,
                    s.succeeded,
                    s.failed,
                    s.skipped,
                    if s.is_finished() { " (finished)" } else { "" }
                );
            }
            Command::Workflow { id } => {
                let s = crate::Workflow::status(&queue, &crate::WorkflowId(id.clone())).await?;
                let _ = writeln!(
                    out,
                    "workflow {id}: {} nodes, {} succeeded, {} failed, {} skipped{}",
                    s.nodes,
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

fn init_logging(verbose: bool) {
    let default = if verbose { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("QUEUE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// The worker options from flags, then `job.toml`, then defaults.
fn worker_options(config: &Config, args: &WorkArgs, only: Option<String>) -> WorkerOptions {
    let mut o = WorkerOptions::default();
    if !args.queue.is_empty() {
        o.queues = args
            .queue
            .iter()
            .map(|q| q.trim().to_owned())
            .filter(|q| !q.is_empty())
            .collect();
    } else if let Some(queues) = &config.queues {
        o.queues = queues.clone();
    }
    if let Some(n) = args.concurrency.or(config.concurrency) {
        o.concurrency = n.max(1);
    }
    if let Some(n) = args.retries.or(config.max_retries) {
        o.tries = n.max(1);
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
    if let Some(ms) = args.sleep.or(config.sleep_ms) {
        o.sleep = Duration::from_millis(ms);
    }
    o.max_jobs = args.max_jobs.or(config.max_job.filter(|n| *n > 0));
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
    o.only = only;
    o
}

/// Completes once the stop flag is set (never, if its sender is gone without setting it).
async fn signalled(mut stop: tokio::sync::watch::Receiver<bool>) {
    if stop.wait_for(|set| *set).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn work(
    queue: &Queue,
    config: &Config,
    args: WorkArgs,
    only: Option<String>,
    progress_bar: bool,
    stop: Option<tokio::sync::watch::Receiver<bool>>,
) -> Result<()> {
    let options = worker_options(config, &args, only);
    let queues = options.queues.clone();
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
        StopReason::Stopped => "stopped",
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
            let _ = writeln!(out, "{} of {} failed jobs", jobs.len(), total);
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
            let mut retried = 0;
            for id in &ids {
                // A batch member goes back with its batch's counts and callbacks.
                let member = match store.get(id).await? {
                    Some(job) => crate::batch::member_of(&job).map(|batch| (batch, job)),
                    None => None,
                };
                let pushed = match member {
                    Some((batch, job)) => {
                        let queue = Queue::from_arc(storage.clone());
                        crate::batch::retry_members(queue.as_ref(), &batch, vec![job])
                            .await?
                            .pop()
                            .flatten()
                    }
                    None => store.retry(id).await?,
                };
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
                    None => {
                        let _ = writeln!(out, "no failed job with id {id}");
                    }
                }
            }
            let _ = writeln!(out, "{retried} jobs retried");
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
            let _ = writeln!(out, "{n} failed jobs deleted");
        }
        FailedCommand::Prune { older_than } => {
            let before = SystemTime::now()
                .checked_sub(older_than)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let n = store.prune(before).await?;
            let _ = writeln!(
                out,
                "{n} failed jobs older than {} deleted",
                humantime::format_duration(older_than)
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
