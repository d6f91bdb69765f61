//! What a run reports: one [`ScenarioReport`] per scenario and driver, as a table and as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Percentiles of a set of durations, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// What was measured, from when to when.
    pub what: String,
    /// How many measurements.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile (nearest rank).
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Timing {
    /// Percentiles of `samples` (microseconds).
    pub fn of(what: impl Into<String>, samples: &[u64]) -> Timing {
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        let rank = |p: f64| -> f64 {
            if sorted.is_empty() {
                return 0.0;
            }
            let index = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
            sorted[index] as f64 / 1000.0
        };
        Timing {
            what: what.into(),
            count: sorted.len() as u64,
            p50_ms: rank(0.50),
            p99_ms: rank(0.99),
            max_ms: sorted.last().map_or(0.0, |m| *m as f64 / 1000.0),
        }
    }
}

/// The faults the harness injected.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Faults {
    /// Worker processes killed with SIGKILL.
    pub kills: u64,
    /// Worker processes stopped with SIGSTOP (and continued).
    pub stops: u64,
    /// Worker processes asked to stop with SIGTERM.
    pub terms: u64,
    /// Worker processes that exited on their own (a job aborted them, or they failed).
    pub crashes: u64,
    /// Restarts of the backend.
    pub backend_restarts: u64,
    /// Worker processes started in all (restarts included).
    pub workers_started: u64,
}

/// One named pass/fail judgement of a scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// What is claimed.
    pub name: String,
    /// Whether it held. `None`: not applicable to this driver (see `detail`).
    pub ok: Option<bool>,
    /// The numbers behind it.
    pub detail: String,
}

/// The verdict of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// Every applicable check held.
    Pass,
    /// At least one check did not.
    Fail,
    /// Not run (no server, not applicable to the driver, or the run broke down).
    Skipped,
}

/// The figures of one scenario against one driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioReport {
    /// The scenario's name.
    pub scenario: String,
    /// The driver (`sqlite`, `postgres`, `redis`, `file`, `memcached`...).
    pub driver: String,
    /// The URL, password redacted.
    pub url: String,
    /// What the driver says of itself (`Capabilities::durable`).
    pub durable: bool,
    /// Jobs whose dispatch returned Ok.
    pub jobs: u64,
    /// Jobs expected to complete that completed at least once.
    pub completed: u64,
    /// Jobs expected to complete that never did and are not in the failed store.
    pub lost: u64,
    /// Jobs that completed more than once.
    pub duplicated: u64,
    /// Of `duplicated`, those where every extra completion follows an earlier attempt that
    /// overlapped a kill, a stop, a lease lapse or a backend restart of its worker.
    pub allowed_duplicates: u64,
    /// Anything else the checker did not expect (see `details`).
    pub unexpected: u64,
    /// Jobs still reserved after the run, once every lease ran out and a final worker
    /// drained the queue.
    pub stuck: u64,
    /// Late acknowledgements refused by the store (fencing), from the workers' logs.
    pub refused_acks: u64,
    /// Jobs in the failed store at the end.
    pub failed: u64,
    /// The scenario's recovery measurement.
    pub recovery: Option<Timing>,
    /// Faults injected.
    pub faults: Faults,
    /// Scenario-specific figures.
    pub extra: BTreeMap<String, serde_json::Value>,
    /// Judgements.
    pub checks: Vec<Check>,
    /// The first anomalies, spelled out.
    pub details: Vec<String>,
    /// PASS, FAIL or SKIPPED.
    pub verdict: Verdict,
    /// Why it was skipped, or what to know about the figures.
    pub note: Option<String>,
    /// Wall time of the scenario, seconds.
    pub seconds: f64,
    /// How far the wall clock ran ahead of the monotonic clock during the scenario, seconds:
    /// more than a second means the machine (a VM) was paused or its clock stepped, and the
    /// ledger's wall-clock timings of that run are void.
    #[serde(default)]
    pub clock_jump: f64,
    /// Where the ledger and the worker logs were kept (on failure, or with `--keep`).
    pub artifacts: Option<String>,
}

impl ScenarioReport {
    /// An empty report for a scenario on a driver.
    pub fn new(scenario: &str, driver: &str, url: &str) -> Self {
        ScenarioReport {
            scenario: scenario.to_owned(),
            driver: driver.to_owned(),
            url: url.to_owned(),
            durable: false,
            jobs: 0,
            completed: 0,
            lost: 0,
            duplicated: 0,
            allowed_duplicates: 0,
            unexpected: 0,
            stuck: 0,
            refused_acks: 0,
            failed: 0,
            recovery: None,
            faults: Faults::default(),
            extra: BTreeMap::new(),
            checks: Vec::new(),
            details: Vec::new(),
            verdict: Verdict::Skipped,
            note: None,
            seconds: 0.0,
            clock_jump: 0.0,
            artifacts: None,
        }
    }

    /// A skipped scenario with the reason.
    pub fn skipped(scenario: &str, driver: &str, url: &str, why: impl Into<String>) -> Self {
        let mut report = Self::new(scenario, driver, url);
        report.note = Some(why.into());
        report
    }

    /// Adds a check.
    pub fn check(&mut self, name: impl Into<String>, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.into(),
            ok: Some(ok),
            detail: detail.into(),
        });
    }

    /// Adds a check that does not apply to this driver, with the reason.
    pub fn not_applicable(&mut self, name: impl Into<String>, why: impl Into<String>) {
        self.checks.push(Check {
            name: name.into(),
            ok: None,
            detail: why.into(),
        });
    }

    /// Sets the verdict from the checks.
    pub fn decide(&mut self) {
        self.verdict = if self.checks.iter().any(|c| c.ok == Some(false)) {
            Verdict::Fail
        } else {
            Verdict::Pass
        };
    }

    /// A scenario-specific figure.
    pub fn set(&mut self, key: &str, value: impl Serialize) {
        if let Ok(value) = serde_json::to_value(value) {
            self.extra.insert(key.to_owned(), value);
        }
    }

    /// Duplicates that no fault explains.
    pub fn unallowed_duplicates(&self) -> u64 {
        self.duplicated.saturating_sub(self.allowed_duplicates)
    }

    /// The check with this name.
    pub fn find_check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }
}

/// Everything one `chaos` command found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The command line, to reproduce the run.
    pub command: String,
    /// When it started (RFC 3339).
    pub started: String,
    /// `full` or `short`.
    pub form: String,
    /// One report per scenario and driver.
    pub reports: Vec<ScenarioReport>,
}

impl Summary {
    /// True if no scenario failed.
    pub fn passed(&self) -> bool {
        self.reports.iter().all(|r| r.verdict != Verdict::Fail)
    }
}

fn ms(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.1}s", value / 1000.0)
    } else {
        format!("{value:.0}ms")
    }
}

/// The results as a text table, followed by the failed checks and notes.
pub fn table(reports: &[ScenarioReport]) -> String {
    let mut out = String::new();
    let header = [
        "scenario",
        "driver",
        "jobs",
        "lost",
        "dup",
        "allowed",
        "unexp",
        "stuck",
        "refused",
        "recovery p99",
        "verdict",
    ];
    let rows: Vec<[String; 11]> = reports
        .iter()
        .map(|r| {
            [
                r.scenario.clone(),
                r.driver.clone(),
                r.jobs.to_string(),
                r.lost.to_string(),
                r.duplicated.to_string(),
                r.allowed_duplicates.to_string(),
                r.unexpected.to_string(),
                r.stuck.to_string(),
                r.refused_acks.to_string(),
                r.recovery
                    .as_ref()
                    .filter(|t| t.count > 0)
                    .map_or_else(|| "-".to_owned(), |t| ms(t.p99_ms)),
                format!("{:?}", r.verdict).to_uppercase(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| -> String {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i < 2 {
                let _ = write!(s, "{cell:<w$}  ");
            } else {
                let _ = write!(s, "{cell:>w$}  ");
            }
        }
        s.trim_end().to_owned()
    };
    let head: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let _ = writeln!(out, "{}", line(&head));
    let _ = writeln!(
        out,
        "{}",
        "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1))
    );
    for row in &rows {
        let _ = writeln!(out, "{}", line(row));
    }
    for r in reports {
        let failed: Vec<&Check> = r.checks.iter().filter(|c| c.ok == Some(false)).collect();
        if failed.is_empty() && r.note.is_none() {
            continue;
        }
        let _ = writeln!(out, "\n{} / {}:", r.scenario, r.driver);
        if let Some(note) = &r.note {
            let _ = writeln!(out, "  note: {note}");
        }
        for c in failed {
            let _ = writeln!(out, "  FAILED {}: {}", c.name, c.detail);
        }
        for d in r.details.iter().take(10) {
            let _ = writeln!(out, "  - {d}");
        }
        if let Some(dir) = &r.artifacts {
            let _ = writeln!(out, "  ledger and worker logs: {dir}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let samples: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        let t = Timing::of("x", &samples);
        assert_eq!((t.p50_ms, t.p99_ms, t.max_ms), (50.0, 99.0, 100.0));
        assert_eq!(Timing::of("none", &[]).count, 0);
    }

    #[test]
    fn table_lists_failures() {
        let mut r = ScenarioReport::new("baseline", "sqlite", "sqlite://x");
        r.check("lost 0", false, "lost 3");
        r.decide();
        let text = table(&[r]);
        assert!(text.contains("FAIL") && text.contains("lost 3"), "{text}");
    }
}
