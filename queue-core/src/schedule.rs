//! Recurring schedules: a job pushed at every tick of an interval or a cron expression, by
//! whichever worker claims the tick first, exactly once per tick.
//!
//! Every worker that runs schedules (all of them by default) may claim a due tick; none is a
//! leader. A schedule's state is a group of counters in the store (`schedule:{id}`): `next`,
//! the time of the next tick (Unix milliseconds). A worker claims the tick at `next` with one
//! [guarded step](crate::storage::Groups::apply_if): it sets `next` to the following tick only
//! if `next` still holds the value it read, and pushes the tick's job in that same atomic
//! step. Of any number of workers, exactly one wins each tick, whatever crashes when: the
//! step applies whole or not at all. The job's unique claim (`schedule:{id}` while a run is
//! queued or running, or `schedule:{id}@{tick}`) is a second guard.
//!
//! [`Overlap::BufferOne`] keeps one more counter, `runs`: the schedule's runs queued,
//! running or buffered (0, 1 or 2). A tick that finds none pushes its job; one that finds
//! one holds its job as a [waiting job](crate::storage::WaitingJob) under
//! `schedule:{id}#buffer`; one that finds two is claimed and runs nothing (as a skipped
//! tick of [`Overlap::Skip`]). Every run's envelope carries, for its end (success or
//! failure for good), `runs - 1` and the release of the waiting job, applied by the worker
//! in the run's own settle step: the buffered run starts exactly when the running one ends.
//! Those ticks are claimed with the guard on `seq` instead of `next`, a counter that every
//! step moving `next` and every run's end change: a tick decides from `runs` and applies
//! only if nothing changed since it read them (a run that ended in between makes it read
//! again), so no buffered run is ever held with nothing left to release it.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::dispatch::PendingDispatch;
use crate::dispatcher::Dispatcher;
use crate::envelope::{After, Step};
use crate::error::{Error, Result};
use crate::job::Job;
use crate::storage::{
    from_unix_millis, unix_millis, Availability, Effect, Guard, NewJob, Unique, WaitingJob,
};

/// The longest a scheduler sleeps before it reads the schedules again (another process may
/// have claimed a tick, a schedule may have been paused).
const MAX_NAP: Duration = Duration::from_secs(5);
/// How often a scheduler looks for due timers of stored schedules.
const TIMER_POLL: Duration = Duration::from_secs(1);
/// The most missed ticks [`CatchUp::All`] walks through one by one.
const MAX_CATCH_UP: u32 = 1000;
/// The spec hash is kept below 2^50, so every store's counters hold it exactly.
const SPEC_MASK: i64 = (1 << 50) - 1;

/// When a schedule fires.
#[derive(Clone)]
enum When {
    /// Every period, at the multiples of the period since the Unix epoch (so every process
    /// computes the same ticks). Absolute: daylight saving time does not move it.
    Every(Duration),
    /// At the times a cron expression matches, in a time zone.
    Cron {
        text: String,
        cron: Box<croner::Cron>,
        tz: jiff::tz::TimeZone,
        tz_name: String,
    },
}

impl fmt::Debug for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl When {
    fn describe(&self) -> String {
        match self {
            When::Every(period) => format!("every {}", humantime::format_duration(*period)),
            When::Cron { text, tz_name, .. } => format!("cron \"{text}\" in {tz_name}"),
        }
    }

    /// The first tick strictly after `t` (Unix milliseconds).
    fn next_after(&self, t: i64) -> Option<i64> {
        match self {
            When::Every(period) => {
                let p = period_ms(*period);
                t.div_euclid(p).checked_add(1)?.checked_mul(p)
            }
            When::Cron { cron, tz, .. } => {
                let zoned = jiff::Timestamp::from_millisecond(t)
                    .ok()?
                    .to_zoned(tz.clone());
                let next = cron.find_next_occurrence(&zoned, false).ok()?;
                Some(next.timestamp().as_millisecond())
            }
        }
    }

    /// The last tick at or before `t`.
    fn at_or_before(&self, t: i64) -> Option<i64> {
        match self {
            When::Every(period) => {
                let p = period_ms(*period);
                t.div_euclid(p).checked_mul(p)
            }
            When::Cron { cron, tz, .. } => {
                let zoned = jiff::Timestamp::from_millisecond(t)
                    .ok()?
                    .to_zoned(tz.clone());
                let previous = cron.find_previous_occurrence(&zoned, true).ok()?;
                Some(previous.timestamp().as_millisecond())
            }
        }
    }
}

fn period_ms(period: Duration) -> i64 {
    i64::try_from(period.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// Whether a tick runs while the previous run of the schedule is still queued or running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Overlap {
    /// The tick is claimed but its job is not pushed (the default): at most one run of the
    /// schedule is queued or running at a time.
    #[default]
    Skip,
    /// Every tick pushes its job, whatever is still running.
    Allow,
    /// A tick that finds a run queued or running keeps one run pending (Temporal's
    /// `BUFFER_ONE`), which starts when that run ends: the step that settles the running
    /// job releases it. Further ticks meanwhile are claimed and run nothing, as with
    /// [`Skip`](Self::Skip). With nothing running, a tick runs at once, as with
    /// [`Allow`](Self::Allow). Needs the store's group counters and waiting jobs (SQL,
    /// Redis on one server, the file driver, memory): refused with
    /// [`Error::NotSupported`] elsewhere (memcached, Redis Cluster).
    ///
    /// A run removed from its queue without ending (cancelled before it started, its queue
    /// cleared) is still counted as queued: the schedule then keeps one run buffered and
    /// skips its ticks until the schedule is changed (its `runs` counter is not repaired).
    BufferOne,
}

impl Overlap {
    /// Its name in `job.toml` and in a stored schedule: `skip`, `allow`, `buffer_one`.
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Allow => "allow",
            Overlap::BufferOne => "buffer_one",
        }
    }
}

/// What a schedule does with the ticks it missed (every worker was down, or busy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CatchUp {
    /// One run, for the latest missed tick (the default): a worker down for an hour runs an
    /// every-minute schedule once when it is back, not 60 times. The others are counted
    /// `missed`.
    #[default]
    Latest,
    /// A run for every missed tick, oldest first, at most `max` (older ones are counted
    /// `missed`; `max` is capped at 1,000).
    All {
        /// The most missed ticks that run.
        max: u32,
    },
}

/// A recurring job: [`every`](Self::every) period or at the times of a [`cron`](Self::cron)
/// expression, claimed exactly once per tick across every worker that runs schedules.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> queue_core::Result<()> {
/// use std::time::Duration;
/// use queue_core::{CatchUp, Queue, Schedule};
///
/// let queue = Queue::connect("memory://").await?;
/// queue.schedule(
///     Schedule::every(Duration::from_secs(10))
///         .id("sweep")
///         .dispatch(queue.dispatch_named("sweep-monitors", serde_json::json!({}))),
/// )?;
/// queue.schedule(
///     Schedule::cron("0 3 * * *")
///         .tz("Asia/Jakarta")
///         .id("nightly-report")
///         .dispatch(queue.dispatch_named("nightly-report", serde_json::json!({})).on_queue("low"))
///         .catch_up(CatchUp::All { max: 3 }),
/// )?;
/// // Workers of this queue run them: `queue.worker(options).run()` (`runall work`).
/// assert_eq!(queue.schedules().len(), 2);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a schedule does nothing until it is given to Queue::schedule"]
pub struct Schedule {
    id: Option<String>,
    when: Result<When, String>,
    job: Option<PendingDispatch>,
    overlap: Overlap,
    catch_up: CatchUp,
    jitter: Option<Duration>,
    until: Option<SystemTime>,
    limit: Option<u64>,
}

impl Schedule {
    fn new(when: Result<When, String>) -> Self {
        Schedule {
            id: None,
            when,
            job: None,
            overlap: Overlap::Skip,
            catch_up: CatchUp::Latest,
            jitter: None,
            until: None,
            limit: None,
        }
    }

    /// Fires every `period`, at the multiples of `period` since the Unix epoch (every 10 s:
    /// at :00, :10, :20 ...; every hour: on the hour, UTC). Absolute time: daylight saving
    /// time never moves it. At least one second.
    pub fn every(period: Duration) -> Self {
        Self::new(if period < Duration::from_secs(1) {
            Err(format!(
                "a schedule's period must be at least 1s, not {}",
                humantime::format_duration(period)
            ))
        } else {
            Ok(When::Every(period))
        })
    }

    /// Fires at the times the cron expression matches: five fields (minute, hour, day of
    /// month, month, day of week) or six with seconds first, names and `L`, `W`, `#` as
    /// [croner](https://docs.rs/croner) reads them. In UTC unless [`tz`](Self::tz) says
    /// otherwise.
    pub fn cron(expression: &str) -> Self {
        let parsed = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(expression)
            .map_err(|e| format!("bad cron expression `{expression}`: {e}"));
        Self::new(parsed.map(|cron| When::Cron {
            text: expression.to_owned(),
            cron: Box::new(cron),
            tz: jiff::tz::TimeZone::UTC,
            tz_name: "UTC".to_owned(),
        }))
    }

    /// The IANA time zone a cron expression is read in (`"Europe/Berlin"`). A local time
    /// that does not exist (the hour skipped in spring) fires once at the first instant after
    /// it; one that happens twice (the hour repeated in autumn) fires once, the first time.
    /// Ignored by [`every`](Self::every), whose ticks are absolute.
    pub fn tz(mut self, name: &str) -> Self {
        if let Ok(When::Cron { tz, tz_name, .. }) = &mut self.when {
            match jiff::tz::TimeZone::get(name) {
                Ok(zone) => {
                    *tz = zone;
                    *tz_name = name.to_owned();
                }
                Err(e) => self.when = Err(format!("unknown time zone `{name}`: {e}")),
            }
        }
        self
    }

    /// The schedule's id: its state in the store is kept under it, so it must not change
    /// between deploys. Defaults to the job's name.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The job each tick pushes, with its defaults.
    pub fn job<J: Job>(self, job: J) -> Self {
        self.dispatch(job.dispatch())
    }

    /// The job each tick pushes, with the options of a dispatch (`.on_queue(..)`,
    /// `.tries(..)`; not a delay, which [`jitter`](Self::jitter) replaces).
    pub fn dispatch(mut self, job: PendingDispatch) -> Self {
        self.job = Some(job);
        self
    }

    /// Whether a tick runs while the previous run is still queued or running.
    pub fn overlap(mut self, overlap: Overlap) -> Self {
        self.overlap = overlap;
        self
    }

    /// Its overlap policy.
    pub fn overlap_policy(&self) -> Overlap {
        self.overlap
    }

    /// What to do with the ticks missed while no worker ran the schedule.
    pub fn catch_up(mut self, catch_up: CatchUp) -> Self {
        self.catch_up = catch_up;
        self
    }

    /// Delays each tick's job by a random time up to `jitter`, so that many schedules on
    /// the same minute do not all start at once.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = (!jitter.is_zero()).then_some(jitter);
        self
    }

    /// No tick after `end`.
    pub fn until(mut self, end: SystemTime) -> Self {
        self.until = Some(end);
        self
    }

    /// At most `runs` ticks in all (counted in the store, across every worker).
    pub fn limit(mut self, runs: u64) -> Self {
        self.limit = Some(runs);
        self
    }

    /// Checks the schedule and fixes its id.
    pub(crate) fn check(mut self) -> Result<Self> {
        if let Err(e) = &self.when {
            return Err(Error::Config(e.clone()));
        }
        let Some(job) = &self.job else {
            return Err(Error::Config(format!(
                "schedule {}: no job: give one with .job(..) or .dispatch(..)",
                self.id.as_deref().unwrap_or("(no id)")
            )));
        };
        let id = self.id.get_or_insert_with(|| job.name().to_owned());
        if id.is_empty() {
            return Err(Error::Config("a schedule's id must not be empty".into()));
        }
        if job.is_unique() {
            return Err(Error::Config(format!(
                "schedule {id}: job `{}` is unique; a schedule's runs are unique by the \
                 schedule already (Overlap::Skip): dispatch it with `.not_unique()`",
                job.name()
            )));
        }
        if matches!(self.catch_up, CatchUp::All { max: 0 }) {
            self.catch_up = CatchUp::Latest;
        }
        Ok(self)
    }

    /// The schedule's id (its job's name if none was given).
    pub fn id_str(&self) -> &str {
        match (&self.id, &self.job) {
            (Some(id), _) => id,
            (None, Some(job)) => job.name(),
            (None, None) => "",
        }
    }

    /// When it fires, in words: `every 10s`, `cron "0 3 * * *" in Asia/Jakarta`.
    pub fn describe(&self) -> String {
        match &self.when {
            Ok(when) => when.describe(),
            Err(e) => format!("invalid: {e}"),
        }
    }

    /// The group holding the schedule's state.
    pub fn group(&self) -> String {
        format!("schedule:{}", self.id_str())
    }

    /// The time from the tick at `tick` to the one after it (`None` for an invalid
    /// schedule).
    pub fn period_after(&self, tick: SystemTime) -> Option<Duration> {
        let at = unix_millis(tick);
        let next = self.when()?.next_after(at)?;
        u64::try_from(next - at).ok().map(Duration::from_millis)
    }

    fn when(&self) -> Option<&When> {
        self.when.as_ref().ok()
    }

    /// A number that changes when the schedule's timing changes: the store's state is
    /// recomputed from now when a deploy changes it.
    /// [`Overlap::BufferOne`] is part of it (its ticks are claimed with another guard), so
    /// that a deploy switching to it or from it starts again from the next tick.
    fn spec_hash(&self) -> i64 {
        let mut text = format!("{:?}", self.when.as_ref().map(When::describe));
        if self.overlap == Overlap::BufferOne {
            text.push_str(" buffer_one");
        }
        let digest = Sha256::digest(text.as_bytes());
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        (i64::from_le_bytes(bytes) & SPEC_MASK).max(1)
    }

    /// The job of the tick at `tick`.
    fn tick_job(&self, dispatcher: &Dispatcher, tick: i64) -> Result<crate::storage::NewJob> {
        let Some(job) = self.job.clone() else {
            return Err(Error::Config(format!("schedule {}: no job", self.id_str())));
        };
        let key = match self.overlap {
            Overlap::Skip => self.group(),
            Overlap::Allow | Overlap::BufferOne => format!("{}@{tick}", self.group()),
        };
        let after = (self.overlap == Overlap::BufferOne).then(|| self.buffer_after());
        let mut job = job
            .dispatched_at(from_unix_millis(tick))
            .encode_with(dispatcher.settings(), after)?;
        if let Some(jitter) = self.jitter {
            job = job.available(Availability::After(jitter.mul_f64(rand::random::<f64>())));
        } else {
            job = job.available(Availability::Now);
        }
        Ok(job.unique(Unique::new(key)))
    }

    /// The key of the run an [`Overlap::BufferOne`] schedule keeps pending.
    fn buffer_key(&self) -> String {
        format!("{}#buffer", self.group())
    }

    /// What the end of an [`Overlap::BufferOne`] run does, in its settle step: one run fewer,
    /// `seq` moved (a tick deciding meanwhile reads again), the buffered run released.
    fn buffer_after(&self) -> After {
        let steps = vec![
            Step::Count {
                group: self.group(),
                deltas: vec![("runs".to_owned(), -1), ("seq".to_owned(), 1)],
            },
            Step::Deps {
                key: self.buffer_key(),
                delta: -1,
            },
        ];
        After {
            succeeded: steps.clone(),
            failed: steps,
            ..After::default()
        }
    }

    /// What a run of an [`Overlap::BufferOne`] schedule does, given the counters read:
    /// pushed (nothing queued or running), held (one is), or nothing (one runs and one is
    /// buffered already). The `runs` deltas go with it.
    fn buffer_run(&self, job: NewJob, counters: &crate::dispatcher::Counters) -> BufferRun {
        let runs = counters.get("runs");
        // Below zero only if the group was removed under a run that ended after: start over.
        let repair = if runs < 0 { -runs } else { 0 };
        match runs.max(0) {
            0 => BufferRun::Run(Effect::Push(job), repair + 1),
            1 => BufferRun::Run(Effect::Hold(WaitingJob::new(self.buffer_key(), 1, job)), 1),
            _ => BufferRun::Full,
        }
    }
}

/// See [`Schedule::buffer_run`].
enum BufferRun {
    /// Push or hold the run, adding this to `runs`.
    Run(Effect, i64),
    /// A run is running and one buffered: nothing.
    Full,
}

/// A schedule's state as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleState {
    /// The schedule's id.
    pub id: String,
    /// When it fires, in words.
    pub when: String,
    /// The next tick, if one was computed (a schedule no worker ran yet has none).
    pub next: Option<SystemTime>,
    /// The last tick claimed.
    pub last: Option<SystemTime>,
    /// The first tick: the first after the schedule was first seen (or its timing changed).
    /// From it to `last`, every tick is claimed once or missed once:
    /// `ticks + missed` is the number of ticks in that span.
    pub first: Option<SystemTime>,
    /// Ticks run: their jobs pushed (or, with [`Overlap::Skip`], not pushed because the
    /// previous run was still queued or running; with [`Overlap::BufferOne`], buffered, or
    /// dropped because one was buffered already). Runs pushed by `run-now` are not counted.
    pub ticks: u64,
    /// Ticks that did not run: missed while no worker ran schedules, or skipped because the
    /// job's queue was full.
    pub missed: u64,
    /// Of `missed`, those skipped because the queue was over its `max_queue_size`.
    pub full: u64,
    /// Whether it is paused (`runall schedule pause`).
    pub paused: bool,
    /// With [`Overlap::BufferOne`]: its runs queued, running or buffered (0 to 2). Always
    /// 0 with the other policies.
    pub runs: u64,
}

impl ScheduleState {
    /// True when the next tick is more than two periods late: no worker runs schedules.
    pub fn is_late(&self, now: SystemTime, period: Duration) -> bool {
        match self.next {
            Some(next) if !self.paused => {
                now.duration_since(next).is_ok_and(|late| late > period * 2)
            }
            _ => false,
        }
    }
}

/// The schedules a queue's workers run, by id.
#[derive(Debug, Clone, Default)]
pub(crate) struct CodeSchedules(pub(crate) Vec<Arc<Schedule>>);

impl CodeSchedules {
    pub(crate) fn add(&mut self, schedule: Schedule) -> Result<()> {
        let schedule = schedule.check()?;
        if self.0.iter().any(|s| s.id_str() == schedule.id_str()) {
            return Err(Error::Config(format!(
                "two schedules have the id `{}`: give one of them another `.id(..)`",
                schedule.id_str()
            )));
        }
        self.0.push(Arc::new(schedule));
        Ok(())
    }
}

/// Reads a schedule's state.
pub(crate) async fn state(dispatcher: &Dispatcher, schedule: &Schedule) -> Result<ScheduleState> {
    state_of(dispatcher, schedule.id_str(), schedule.describe()).await
}

/// Reads the state of the schedule `id`, described as `when`.
pub(crate) async fn state_of(
    dispatcher: &Dispatcher,
    id: &str,
    when: String,
) -> Result<ScheduleState> {
    let c = dispatcher.counters(&format!("schedule:{id}")).await?;
    let at = |v: i64| (v > 0).then(|| from_unix_millis(v));
    Ok(ScheduleState {
        id: id.to_owned(),
        when,
        next: at(c.get("next")),
        last: at(c.get("last")),
        first: at(c.get("first")),
        ticks: u64::try_from(c.get("ticks")).unwrap_or(0),
        missed: u64::try_from(c.get("missed")).unwrap_or(0),
        full: u64::try_from(c.get("full")).unwrap_or(0),
        paused: c.get("paused") > 0,
        runs: u64::try_from(c.get("runs")).unwrap_or(0),
    })
}

/// Pauses (`true`) or resumes the schedule `id` for every worker.
pub(crate) async fn set_paused(dispatcher: &Dispatcher, id: &str, paused: bool) -> Result<()> {
    let group = format!("schedule:{id}");
    let held = dispatcher.counters(&group).await?.get("paused");
    let want = i64::from(paused);
    if held != want {
        dispatcher
            .groups()?
            .apply_if(Guard::new(&group, "paused", held, want), Vec::new())
            .await?;
    }
    Ok(())
}

/// Whether a stored schedule `id` exists.
pub(crate) async fn is_stored(dispatcher: &Dispatcher, id: &str) -> Result<bool> {
    Ok(dispatcher
        .counters(&format!("schedule:{id}"))
        .await?
        .get("def")
        != 0)
}

/// The ids of the stored schedules, sorted, a page at a time.
pub(crate) async fn stored_ids(
    dispatcher: &Dispatcher,
    page: crate::storage::PageRequest,
) -> Result<crate::storage::Page<String>> {
    let groups = dispatcher.groups()?.list("schedule:", page).await?;
    let mut items = Vec::with_capacity(groups.items.len());
    for group in &groups.items {
        let id = &group["schedule:".len()..];
        if is_stored(dispatcher, id).await? {
            items.push(id.to_owned());
        }
    }
    Ok(crate::storage::Page {
        items,
        next: groups.next,
    })
}

/// Pushes a run of the schedule now, outside its ticks (`runall schedule run-now`). Its
/// overlap policy holds: with [`Overlap::Skip`], nothing is pushed while a run is queued or
/// running; with [`Overlap::BufferOne`], the run is held until the running one ends, and
/// nothing is pushed if one is held already. Returns whether a run was pushed or held.
pub(crate) async fn run_now(dispatcher: &Dispatcher, schedule: &Schedule) -> Result<bool> {
    let now = unix_millis(SystemTime::now());
    let job = schedule.tick_job(dispatcher, now)?;
    if schedule.overlap != Overlap::BufferOne {
        // The job's unique claim is all the state Skip and Allow keep: one atomic push.
        let pushed = dispatcher.push(vec![job]).await?;
        return Ok(pushed.first().is_some_and(|p| p.is_created()));
    }
    dispatcher.needs_groups("Overlap::BufferOne (it keeps its runs in group counters)")?;
    let group = schedule.group();
    dispatcher.check_sizes(std::slice::from_ref(&job)).await?;
    // Decided from `runs` and applied only if `seq` is unchanged: a run that ended, or a
    // tick claimed, since the read makes it read again.
    for _ in 0..100 {
        let c = dispatcher.counters(&group).await?;
        let seq = c.get("seq");
        let BufferRun::Run(effect, runs) = schedule.buffer_run(job.clone(), &c) else {
            return Ok(false);
        };
        let effects = vec![effect, count(&group, &[("runs", runs)])];
        if dispatcher
            .groups()?
            .apply_if(Guard::new(&group, "seq", seq, seq + 1), effects)
            .await?
        {
            return Ok(true);
        }
    }
    Err(Error::Config(format!(
        "schedule {}: its state changed 100 times while a run was pushed; try again",
        schedule.id_str()
    )))
}

/// Runs `schedules` (those in code) and the stored ones until `stop` turns true: claims
/// their due ticks and pushes their jobs. Stored schedules are looked for about once a
/// second.
pub(crate) async fn run(
    dispatcher: Dispatcher,
    schedules: Vec<Arc<Schedule>>,
    mut stop: watch::Receiver<bool>,
) {
    let caps = dispatcher.storage().capabilities();
    let stored = caps.groups.is_some() && caps.claims;
    if !stored {
        if !schedules.is_empty() {
            let e = dispatcher
                .needs_groups("schedules (they keep their state in group counters)")
                .err()
                .unwrap_or(Error::NotSupported {
                    driver: caps.driver,
                    operation: "schedules (their ticks are unique jobs)",
                });
            warn!(error = %e, "schedules are not run");
        }
        return;
    }
    if !schedules.is_empty() {
        info!(
            schedules = %schedules.iter().map(|s| s.id_str()).collect::<Vec<_>>().join(","),
            "scheduler started"
        );
    }
    let mut warned = HashSet::new();
    let mut timers_warned = false;
    loop {
        let mut nap = MAX_NAP.min(TIMER_POLL);
        match stored::run_timers(&dispatcher).await {
            Ok(n) if n > 0 => nap = Duration::ZERO,
            Ok(_) => {}
            Err(e) if !timers_warned => {
                warn!(error = %e, "stored schedules could not be run; retrying");
                timers_warned = true;
            }
            Err(e) => debug!(error = %e, "stored schedules could not be run"),
        }
        for schedule in &schedules {
            match tick(&dispatcher, schedule).await {
                Ok(Look::Next(next)) => {
                    let wait = next
                        .duration_since(SystemTime::now())
                        .unwrap_or(Duration::ZERO);
                    nap = nap.min(wait);
                }
                Ok(Look::Paused | Look::Ended) => {}
                Err(e) => {
                    if warned.insert(schedule.id_str().to_owned()) {
                        warn!(schedule = schedule.id_str(), error = %e, "schedule tick failed; retrying");
                    } else {
                        debug!(schedule = schedule.id_str(), error = %e, "schedule tick failed");
                    }
                    nap = nap.min(Duration::from_secs(1));
                }
            }
        }
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(nap) => {}
            _ = stop.changed() => return,
        }
    }
}

/// What one look at a schedule found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Look {
    /// Look again at this time (the next tick).
    Next(SystemTime),
    /// Paused: look again later.
    Paused,
    /// No tick will come any more (past its end, or its run limit reached).
    Ended,
}

impl Look {
    /// The next tick, if one is coming.
    #[cfg(test)]
    fn next(self) -> Option<SystemTime> {
        match self {
            Look::Next(at) => Some(at),
            _ => None,
        }
    }
}

/// One look at a schedule: claims what is due, and says when to look again.
pub(crate) async fn tick(dispatcher: &Dispatcher, schedule: &Schedule) -> Result<Look> {
    let Some(when) = schedule.when() else {
        return Ok(Look::Ended);
    };
    let groups = dispatcher.groups()?;
    let group = schedule.group();
    // A few rounds: after a claim, the next tick may be due already (catch-up).
    for _ in 0..=MAX_CATCH_UP {
        let c = dispatcher.counters(&group).await?;
        if c.get("paused") > 0 {
            return Ok(Look::Paused);
        }
        let now = unix_millis(SystemTime::now());
        let next = c.get("next");
        let spec = schedule.spec_hash();
        if next == 0 || c.get("spec") != spec {
            // First seen, or its timing changed with a deploy: the next tick from now.
            let Some(first) = when.next_after(now) else {
                return Ok(Look::Ended);
            };
            let effects = vec![count(
                &group,
                &[
                    ("spec", spec - c.get("spec")),
                    ("first", first - c.get("first")),
                    ("seq", 1),
                ],
            )];
            groups
                .apply_if(Guard::new(&group, "next", next, first), effects)
                .await?;
            continue;
        }
        if next > now {
            return Ok(Look::Next(from_unix_millis(next)));
        }
        let ticks = c.get("ticks");
        let ended = schedule.until.is_some_and(|end| next > unix_millis(end))
            || schedule
                .limit
                .is_some_and(|limit| u64::try_from(ticks).unwrap_or(0) >= limit);
        if ended {
            return Ok(Look::Ended);
        }
        // The tick to run and the next one after it.
        let (run_at, following, missed) = match schedule.catch_up {
            CatchUp::Latest => {
                let (latest, missed) = latest_due(when, next, now);
                (latest, when.next_after(now.max(latest)), missed)
            }
            CatchUp::All { max } => {
                let behind = count_between(when, next, now.saturating_add(1));
                let max = i64::from(max.min(MAX_CATCH_UP));
                if behind > max {
                    // Drop the oldest beyond `max`: move `next` to the first kept tick.
                    let mut first = next;
                    for _ in 0..behind - max {
                        first = when.next_after(first).unwrap_or(i64::MAX);
                    }
                    let effects = vec![count(&group, &[("missed", behind - max), ("seq", 1)])];
                    groups
                        .apply_if(Guard::new(&group, "next", next, first), effects)
                        .await?;
                    continue;
                }
                (next, when.next_after(next), 0)
            }
        };
        let following = following.unwrap_or(i64::MAX);
        let job = schedule.tick_job(dispatcher, run_at)?;
        let mut deltas = vec![("ticks", 1), ("last", run_at - c.get("last"))];
        if missed > 0 {
            deltas.push(("missed", missed));
        }
        let buffer_one = schedule.overlap == Overlap::BufferOne;
        let mut run = match buffer_one {
            true => schedule.buffer_run(job.clone(), &c),
            false => BufferRun::Run(Effect::Push(job.clone()), 0),
        };
        if let BufferRun::Run(_, runs) = run {
            match dispatcher.check_sizes(std::slice::from_ref(&job)).await {
                Ok(()) => deltas.push(("runs", runs)),
                Err(Error::QueueFull { queue, size, limit }) => {
                    // Back-pressure (seed 003's MAX_QUEUE_SIZE): the tick is claimed, not run.
                    debug!(
                        schedule = schedule.id_str(),
                        queue, size, limit, "queue full: tick skipped"
                    );
                    deltas = vec![
                        ("last", run_at - c.get("last")),
                        ("missed", missed + 1),
                        ("full", 1),
                    ];
                    run = BufferRun::Full;
                }
                Err(e) => return Err(e),
            }
        }
        deltas.retain(|(_, delta)| *delta != 0);
        // BufferOne ticks are guarded on `seq` (see the module docs), `next` moved by a
        // delta: every step that moves `next` moves `seq` too.
        let guard = if buffer_one {
            deltas.push(("next", following - next));
            let seq = c.get("seq");
            Guard::new(&group, "seq", seq, seq + 1)
        } else {
            deltas.push(("seq", 1));
            Guard::new(&group, "next", next, following)
        };
        let mut effects = vec![count(&group, &deltas)];
        if let BufferRun::Run(effect, _) = run {
            effects.push(effect);
        }
        let won = groups.apply_if(guard, effects).await?;
        if won {
            debug!(schedule = schedule.id_str(), tick = run_at, "tick claimed");
        }
    }
    Ok(Look::Next(SystemTime::now() + Duration::from_secs(1)))
}

fn count(group: &str, deltas: &[(&str, i64)]) -> Effect {
    Effect::Count {
        group: group.to_owned(),
        deltas: deltas
            .iter()
            .map(|(name, delta)| ((*name).to_owned(), *delta))
            .collect(),
    }
}

/// The last tick at or before `now`, counting from the due tick `next`, and how many ticks
/// come before it from `next` on. Walks the ticks (so a repeated local hour counts once, as
/// [`When::next_after`] gives them), or jumps after [`MAX_CATCH_UP`] of them.
fn latest_due(when: &When, next: i64, now: i64) -> (i64, i64) {
    if let When::Every(period) = when {
        let latest = when.at_or_before(now).unwrap_or(next).max(next);
        return (latest, (latest - next) / period_ms(*period));
    }
    let (mut latest, mut before) = (next, 0);
    while before <= i64::from(MAX_CATCH_UP) {
        match when.next_after(latest) {
            Some(following) if following <= now => {
                latest = following;
                before += 1;
            }
            _ => return (latest, before),
        }
    }
    let jumped = when.at_or_before(now).unwrap_or(latest).max(latest);
    (jumped, before + count_between(when, latest, jumped))
}

/// How many ticks fall in `[from, to)`, counting at most [`MAX_CATCH_UP`] + 1.
fn count_between(when: &When, from: i64, to: i64) -> i64 {
    match when {
        When::Every(period) => {
            let p = period_ms(*period);
            if to <= from {
                0
            } else {
                (to - from + p - 1) / p
            }
        }
        When::Cron { .. } => {
            let mut n = 0;
            let mut at = from;
            while at < to && n <= i64::from(MAX_CATCH_UP) {
                n += 1;
                match when.next_after(at) {
                    Some(next) => at = next,
                    None => break,
                }
            }
            n
        }
    }
}

impl FromStr for Overlap {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "skip" => Ok(Overlap::Skip),
            "allow" => Ok(Overlap::Allow),
            "buffer_one" => Ok(Overlap::BufferOne),
            other => Err(format!(
                "bad overlap `{other}`, expected skip, allow or buffer_one"
            )),
        }
    }
}

mod stored;
#[cfg(test)]
mod tests;

pub(crate) use stored::definition as stored_definition;
pub use stored::{Schedules, Upserted};
