//! What differs between the SQL databases this crate speaks: the schema and its table names.
//!
//! The statements themselves live in one module per dialect (`sqlite/sql.rs` today); this
//! module holds what every dialect shares: validated table names and the schema text that
//! `Storage::migrate` applies and `runall table` prints.

use std::fmt;

use queue_core::{Error, Result};

/// A SQL dialect this crate knows.
///
/// Only SQLite has a driver today; PostgreSQL and MySQL/MariaDB will join it behind their
/// own cargo features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dialect {
    /// SQLite 3.42 or newer (the bundled library is 3.46).
    Sqlite,
}

impl Dialect {
    /// The dialect a connection URL names by its scheme (`sqlite:...`), if this crate knows it.
    pub fn from_url(url: &str) -> Option<Dialect> {
        let scheme = url.split_once(':').map_or(url, |(scheme, _)| scheme);
        match scheme {
            "sqlite" => Some(Dialect::Sqlite),
            _ => None,
        }
    }

    /// The dialect's name, as drivers report it (`sqlite`).
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
        }
    }

    /// The migration files of this dialect, in the order they apply, with their
    /// `{table}`, `{failed_table}`, `{locks_table}` and `{counters_table}` placeholders.
    fn migrations(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Dialect::Sqlite => &[
                (
                    "0001_jobs.sql",
                    include_str!("../migrations/sqlite/0001_jobs.sql"),
                ),
                (
                    "0002_failed_jobs.sql",
                    include_str!("../migrations/sqlite/0002_failed_jobs.sql"),
                ),
                (
                    "0003_locks.sql",
                    include_str!("../migrations/sqlite/0003_locks.sql"),
                ),
                (
                    "0004_counters.sql",
                    include_str!("../migrations/sqlite/0004_counters.sql"),
                ),
            ],
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The default name of the jobs table.
pub const DEFAULT_TABLE: &str = "jobs";
/// The default name of the failed-jobs table.
pub const DEFAULT_FAILED_TABLE: &str = "failed_jobs";

/// The names of the tables a store uses, checked to be plain SQL identifiers.
///
/// Names are pasted into SQL text (a table name cannot be a bound parameter), so only
/// `[A-Za-z_][A-Za-z0-9_]*` is accepted, at most 48 characters: nothing can be injected.
/// The locks and counters tables are named after the jobs table: `{table}_locks`,
/// `{table}_counters`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tables {
    jobs: String,
    failed: String,
    locks: String,
    counters: String,
}

impl Tables {
    /// Checks and keeps the names of the jobs table and the failed-jobs table.
    pub fn new(table: &str, failed_table: &str) -> Result<Tables> {
        check_identifier(table, "table")?;
        check_identifier(failed_table, "failed table")?;
        if table == failed_table {
            return Err(Error::Config(format!(
                "the jobs table and the failed-jobs table are both named `{table}`"
            )));
        }
        let locks = format!("{table}_locks");
        let counters = format!("{table}_counters");
        if failed_table == locks
            || failed_table == counters
            || failed_table == format!("{table}_due")
        {
            return Err(Error::Config(format!(
                "the failed-jobs table `{failed_table}` clashes with a table named after `{table}`"
            )));
        }
        Ok(Tables {
            jobs: table.to_owned(),
            failed: failed_table.to_owned(),
            locks,
            counters,
        })
    }

    /// The jobs table.
    pub fn jobs(&self) -> &str {
        &self.jobs
    }

    /// The failed-jobs table.
    pub fn failed(&self) -> &str {
        &self.failed
    }

    /// The locks table, `{table}_locks`.
    pub fn locks(&self) -> &str {
        &self.locks
    }

    /// The counters table, `{table}_counters`.
    pub fn counters(&self) -> &str {
        &self.counters
    }

    /// Pastes the table names into a statement's `{table}`, `{failed_table}`,
    /// `{locks_table}` and `{counters_table}` placeholders.
    pub(crate) fn fill(&self, sql: &str) -> String {
        sql.replace("{failed_table}", &self.failed)
            .replace("{locks_table}", &self.locks)
            .replace("{counters_table}", &self.counters)
            .replace("{table}", &self.jobs)
    }
}

impl Default for Tables {
    fn default() -> Self {
        Tables {
            jobs: DEFAULT_TABLE.to_owned(),
            failed: DEFAULT_FAILED_TABLE.to_owned(),
            locks: format!("{DEFAULT_TABLE}_locks"),
            counters: format!("{DEFAULT_TABLE}_counters"),
        }
    }
}

fn check_identifier(name: &str, what: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if first_ok && rest_ok && name.len() <= 48 {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "invalid {what} name `{name}`: use letters, digits and underscores, not starting with a digit, at most 48 characters"
        )))
    }
}

/// The schema of a store: the statements `Storage::migrate` applies, for the dialect and the
/// table names given. Every statement is idempotent (`CREATE ... IF NOT EXISTS`), so the text
/// can be run by hand on a database that already has some of it.
///
/// ```
/// use queue_database::{schema_sql, Dialect, Tables};
///
/// let sql = schema_sql(Dialect::Sqlite, &Tables::new("jobs", "failed_jobs")?);
/// assert!(sql.contains("CREATE TABLE IF NOT EXISTS jobs ("));
/// assert!(sql.contains("CREATE TABLE IF NOT EXISTS jobs_locks ("));
/// # Ok::<(), queue_core::Error>(())
/// ```
pub fn schema_sql(dialect: Dialect, tables: &Tables) -> String {
    let mut out = String::new();
    for (file, sql) in dialect.migrations() {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!("-- {dialect}/{file}\n"));
        out.push_str(&tables.fill(sql));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked() {
        assert!(Tables::new("jobs", "failed_jobs").is_ok());
        assert!(Tables::new("_q2", "F").is_ok());
        for bad in [
            "",
            "1jobs",
            "jobs;drop",
            "jo bs",
            "jobs\"",
            "żółw",
            &"x".repeat(49),
        ] {
            assert!(Tables::new(bad, "failed").is_err(), "{bad:?}");
            assert!(Tables::new("jobs", bad).is_err(), "{bad:?}");
        }
        assert!(Tables::new("jobs", "jobs").is_err());
        assert!(Tables::new("jobs", "jobs_locks").is_err());
        assert!(Tables::new("jobs", "jobs_counters").is_err());
        assert!(Tables::new("jobs", "jobs_due").is_err());
    }

    #[test]
    fn schema_has_no_placeholders_left() {
        let sql = schema_sql(Dialect::Sqlite, &Tables::new("q", "fq").unwrap());
        assert!(!sql.contains('{') && !sql.contains('}'), "{sql}");
        assert!(sql.contains("CREATE TABLE IF NOT EXISTS q ("));
        assert!(sql.contains("CREATE TABLE IF NOT EXISTS fq ("));
        assert!(sql.contains("CREATE TABLE IF NOT EXISTS q_locks ("));
        assert!(sql.contains("CREATE TABLE IF NOT EXISTS q_counters ("));
        assert!(sql.contains("CREATE INDEX IF NOT EXISTS q_due ON q (queue, due_at, id)"));
    }

    #[test]
    fn dialect_from_url() {
        assert_eq!(Dialect::from_url("sqlite://jobs.db"), Some(Dialect::Sqlite));
        assert_eq!(Dialect::from_url("sqlite::memory:"), Some(Dialect::Sqlite));
        assert_eq!(Dialect::from_url("redis://x"), None);
    }
}
