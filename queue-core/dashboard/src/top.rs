//! `runall top`: a live terminal view of the store, like sidekiqmon: each queue's waiting,
//! delayed and running jobs, the failed store, the live workers with their busy slots, and
//! the rate of jobs done and failed, from the workers' own counts between two reads. It
//! reads what the dashboard's overview reads ([`collect`](crate::live::collect)), with the
//! same bounded counts ("10,000+").

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::time::{Duration, Instant};

use queue_core::Queue;

use crate::live::{collect, count, Snapshot};
use crate::Result;

/// How `runall top` runs.
#[derive(Debug, Clone)]
pub struct TopOptions {
    /// Time between two reads (2 s by default).
    pub every: Duration,
    /// Reads before it stops; `None`: until interrupted.
    pub rounds: Option<u64>,
}

impl Default for TopOptions {
    fn default() -> Self {
        TopOptions {
            every: Duration::from_secs(2),
            rounds: None,
        }
    }
}

/// Prints the view every `options.every` until SIGINT or SIGTERM (or `rounds` reads): on a
/// terminal the screen is redrawn in place, otherwise each read is printed after the last.
pub async fn top(queue: Queue, options: TopOptions) -> Result<()> {
    let terminal = std::io::stdout().is_terminal();
    let mut last: Option<(Instant, u64, u64)> = None;
    let mut round = 0u64;
    let stop = crate::stopped();
    tokio::pin!(stop);
    loop {
        let snapshot = collect(&queue, false).await?;
        let (done, failed) = totals(&snapshot);
        let now = Instant::now();
        let rates = last.map(|(at, d, f)| {
            let secs = now.duration_since(at).as_secs_f64().max(0.001);
            (
                done.saturating_sub(d) as f64 / secs,
                failed.saturating_sub(f) as f64 / secs,
            )
        });
        last = Some((now, done, failed));
        show(terminal, &render(&queue, &snapshot, rates));
        round += 1;
        if options.rounds.is_some_and(|r| round >= r) {
            return Ok(());
        }
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(options.every) => {}
        }
    }
}

/// Writes one view: on a terminal, over the last one.
fn show(terminal: bool, text: &str) {
    let mut out = std::io::stdout().lock();
    if terminal {
        // Home and clear: the view redrawn in place.
        let _ = write!(out, "\x1b[H\x1b[2J");
    }
    let _ = out.write_all(text.as_bytes());
    if !terminal {
        // Reads one after the other, a blank line between them.
        let _ = writeln!(out);
    }
    let _ = out.flush();
}

/// Jobs done and failed by the live workers since they started, by their own counts.
fn totals(s: &Snapshot) -> (u64, u64) {
    match &s.workers {
        Ok(w) => (
            w.iter().map(|w| w.processed).sum(),
            w.iter().map(|w| w.failed).sum(),
        ),
        Err(_) => (0, 0),
    }
}

fn render(queue: &Queue, s: &Snapshot, rates: Option<(f64, f64)>) -> String {
    let mut out = String::new();
    let stamp = humantime::format_rfc3339_seconds(s.as_of);
    let driver = queue.storage().capabilities().driver;
    let _ = writeln!(out, "runall top · {driver} · {stamp}");
    let _ = writeln!(out);
    match &s.workers {
        Ok(workers) => {
            let busy: usize = workers.iter().map(|w| w.busy).sum();
            let slots: usize = workers.iter().map(|w| w.slots).sum();
            let _ = write!(
                out,
                "workers {}   busy {busy} of {slots} slots",
                workers.len()
            );
            match rates {
                Some((done, failed)) => {
                    let _ = writeln!(out, "   done {done:.1}/s   failed {failed:.1}/s");
                }
                None => {
                    let _ = writeln!(out, "   rates from the next read");
                }
            }
        }
        Err(e) => {
            let _ = writeln!(out, "workers: not available ({e})");
        }
    }
    match &s.failed {
        Ok(n) => {
            let _ = writeln!(out, "failed store {n}");
        }
        Err(e) => {
            let _ = writeln!(out, "failed store: not available ({e})");
        }
    }
    let _ = writeln!(out);
    match &s.queues {
        Ok(rows) if rows.is_empty() => {
            let _ = writeln!(out, "no queue holds a job");
        }
        Ok(rows) => {
            let _ = writeln!(
                out,
                "{:<24} {:>9} {:>9} {:>9}  state",
                "queue", "waiting", "delayed", "running"
            );
            for (name, size) in rows {
                let paused = s.paused.as_ref().is_ok_and(|p| p.contains(name));
                let _ = writeln!(
                    out,
                    "{:<24} {:>9} {:>9} {:>9}  {}",
                    name,
                    count(size.waiting),
                    count(size.delayed),
                    count(size.reserved),
                    if paused { "PAUSED" } else { "running" }
                );
            }
        }
        Err(e) => {
            let _ = writeln!(out, "queues: not available ({e})");
        }
    }
    if let Ok(workers) = &s.workers {
        if !workers.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "{:<28} {:>7} {:>7}  queues", "worker", "busy", "done");
            for w in workers {
                let _ = writeln!(
                    out,
                    "{:<28} {:>3}/{:<3} {:>7}  {}",
                    format!("{}:{}", w.host, w.pid),
                    w.busy,
                    w.slots,
                    w.processed,
                    crate::workers::queues_of(w)
                );
            }
        }
    }
    out
}
