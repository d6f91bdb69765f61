//! The overview's throughput charts: jobs succeeded and failed by minute over the last hour
//! and by hour over the last day, the wait from dispatch to start (mean, p50, p95 and p99,
//! estimated from the history's buckets), and how long the
//! waiting jobs take at the recent rate. Read from the history the workers write
//! ([`queue_core::stats`]) when the page loads, at most once every [`REUSE`] per dashboard
//! (the workers add to it every 10 s).

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use maud::{html, Markup};
use queue_core::stats::{self, History, Point};
use queue_core::{Error as QueueError, Queue};

use crate::view::unsupported;

/// How long one reading of the history answers page loads.
pub(crate) const REUSE: Duration = Duration::from_secs(5);

/// The last reading of the history, and when it was made.
#[derive(Debug, Default)]
pub(crate) struct Cache(Mutex<Option<(Instant, History)>>);

impl Cache {
    /// The history, read now or at most [`REUSE`] ago.
    pub(crate) async fn history(&self, queue: &Queue) -> Result<History, QueueError> {
        if let Some((at, history)) = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
        {
            if at.elapsed() < REUSE {
                return Ok(history.clone());
            }
        }
        let history = stats::history(queue.storage().as_ref(), SystemTime::now()).await?;
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((Instant::now(), history.clone()));
        Ok(history)
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `HH:MM`, UTC.
fn clock(t: SystemTime) -> String {
    let s = secs(t);
    format!("{:02}:{:02}", s / 3600 % 24, s / 60 % 60)
}

/// The waits of `points` together: mean, p50, p95 and p99, or "no starts".
fn waits_text(points: &[Point]) -> Markup {
    let Some(all) = Point::sum(points).filter(|p| p.starts > 0) else {
        return html! { span.wait { "no starts" } };
    };
    html! {
        span.wait { (wait_text(all.mean_wait())) } " mean, "
        span.p50 { (wait_text(all.wait_quantile(0.5))) } " p50, "
        span.p95 { (wait_text(all.wait_quantile(0.95))) } " p95, "
        span.p99 { (wait_text(all.wait_quantile(0.99))) } " p99"
    }
}

pub(crate) fn wait_text(wait: Option<Duration>) -> String {
    match wait {
        Some(w) if w < Duration::from_secs(1) => format!("{} ms", w.as_millis()),
        Some(w) if w < Duration::from_secs(120) => format!("{:.1} s", w.as_secs_f64()),
        Some(w) => format!("{} min", w.as_secs() / 60),
        None => "no starts".to_owned(),
    }
}

/// A bar chart of `points`: succeeded below, failed on top, each bar titled with its numbers;
/// a time under every `label_every`-th bar.
fn chart(points: &[Point], label_every: usize, what: &str) -> Markup {
    const W: f64 = 720.0;
    const H: f64 = 120.0;
    let most = points
        .iter()
        .map(|p| p.processed + p.failed)
        .max()
        .unwrap_or(0)
        .max(1);
    let bar = W / points.len().max(1) as f64;
    let scale = |n: u64| n as f64 / most as f64 * H;
    html! {
        svg.chart viewBox=(format!("0 0 {W} {}", H + 18.0)) role="img" aria-label=(what) {
            line.axis x1="0" y1=(H) x2=(W) y2=(H) {}
            text.scale x="2" y="10" { (most) }
            @for (i, p) in points.iter().enumerate() {
                @let x = i as f64 * bar;
                @let ok = scale(p.processed);
                @let bad = scale(p.failed);
                g {
                    title {
                        (clock(p.at)) " UTC: " (p.processed) " succeeded, " (p.failed) " failed, wait "
                        (wait_text(p.mean_wait())) " mean, " (wait_text(p.wait_quantile(0.95))) " p95"
                    }
                    rect.hit x=(format!("{x:.1}")) y="0" width=(format!("{bar:.1}")) height=(H) {}
                    @if p.processed > 0 {
                        rect.ok x=(format!("{:.1}", x + 0.5)) y=(format!("{:.1}", H - ok))
                            width=(format!("{:.1}", (bar - 1.0).max(0.5))) height=(format!("{ok:.1}")) {}
                    }
                    @if p.failed > 0 {
                        rect.bad x=(format!("{:.1}", x + 0.5)) y=(format!("{:.1}", H - ok - bad))
                            width=(format!("{:.1}", (bar - 1.0).max(0.5))) height=(format!("{bad:.1}")) {}
                    }
                }
                @if i % label_every == 0 {
                    text.time x=(format!("{x:.1}")) y=(H + 14.0) { (clock(p.at)) }
                }
            }
        }
    }
}

/// How long `waiting` jobs take at the rate of the last five whole minutes.
fn eta(history: &History, waiting: Option<u64>) -> Markup {
    let recent = &history.minutes
        [history.minutes.len().saturating_sub(6)..history.minutes.len().saturating_sub(1)];
    let done: u64 = recent.iter().map(|p| p.processed + p.failed).sum();
    let per_minute = done as f64 / recent.len().max(1) as f64;
    html! {
        p.eta {
            @match waiting {
                None => "Backlog: unknown (this store cannot count its queues).",
                Some(0) => "Backlog: no job waiting.",
                Some(n) if per_minute <= 0.0 => {
                    "Backlog: " (crate::live::count(n)) " waiting, and no job ended in the last five minutes: no estimate."
                }
                Some(n) => {
                    @let minutes = n as f64 / per_minute;
                    "Backlog: " (crate::live::count(n)) " waiting; at the last five minutes' "
                    (format!("{per_minute:.0}")) " a minute they take "
                    (if minutes < 1.0 { "under a minute".to_owned() } else if minutes < 120.0 { format!("about {minutes:.0} min") } else { format!("about {:.1} h", minutes / 60.0) })
                    @if n >= crate::live::COUNT_CAP { " or more" }
                    "."
                }
            }
        }
    }
}

/// The overview's history section, or what keeps the store from having one.
pub(crate) fn section(history: &Result<History, QueueError>, waiting: Option<u64>) -> Markup {
    let history = match history {
        Ok(history) => history,
        Err(e @ QueueError::NotSupported { .. }) => {
            return html! {
                section #history {
                    h2 { "Throughput" }
                    (unsupported(e))
                    p.note { "The history is kept in group counters, which this store does not have." }
                }
            };
        }
        Err(e) => {
            return html! {
                section #history {
                    h2 { "Throughput" }
                    p.error { "Could not read the throughput history: " (e) }
                }
            };
        }
    };
    let hour_done: u64 = history.minutes.iter().map(|p| p.processed).sum();
    let hour_failed: u64 = history.minutes.iter().map(|p| p.failed).sum();
    let day_done: u64 = history.hours.iter().map(|p| p.processed).sum();
    let day_failed: u64 = history.hours.iter().map(|p| p.failed).sum();
    html! {
        section #history {
            h2 { "Throughput" }
            p.summary #history-hour {
                "Last hour: " span.processed { (hour_done) } " succeeded, "
                span.failed { (hour_failed) } " failed; wait from dispatch to start "
                (waits_text(&history.minutes)) "."
            }
            (eta(history, waiting))
            (chart(&history.minutes, 10, "Jobs ended by minute, last hour"))
            p.summary #history-day {
                "Last day: " (day_done) " succeeded, " (day_failed) " failed; wait "
                (waits_text(&history.hours)) "."
            }
            (chart(&history.hours, 4, "Jobs ended by hour, last day"))
            p.note {
                "Blue: succeeded; red: failed for good. By minute and by hour, UTC, from what each worker adds every 10 s; read at most every 5 s. Percentiles are estimated from buckets (10 ms to 30 min, about three a decade): each is accurate to its bucket."
            }
        }
    }
}
