//! The schema of a store: its checked table names and the migration files, for every
//! database whatever the cargo features, so a binary built for one database can still print
//! the schema of another (`runall table`).

use std::fmt;

use queue_core::{Error, Result};

/// A SQL database this crate knows, for its schema. The driver of each is behind a cargo
/// feature of the same name (`sqlite`, `postgres`, `mysql`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Dialect {
    /// SQLite 3.42 or newer (the bundled library is 3.46): `sqlite:` URLs.
    Sqlite,
    /// PostgreSQL 13 or newer: `postgres://` and `postgresql://` URLs.
    Postgres,
    /// MySQL 8.0.13 or newer, or MariaDB 10.6 or newer: `mysql://` and `mariadb://` URLs.
    MySql,
}

/// The migration files of one database, in order: the same names for each.
macro_rules! migrations {
    ($db:literal) => {
        &[
            (
                "0001_jobs.sql",
                include_str!(concat!("../migrations/", $db, "/0001_jobs.sql")),
            ),
            (
                "0002_failed_jobs.sql",
                include_str!(concat!("../migrations/", $db, "/0002_failed_jobs.sql")),
            ),
            (
                "0003_locks.sql",
                include_str!(concat!("../migrations/", $db, "/0003_locks.sql")),
            ),
            (
                "0004_counters.sql",
                include_str!(concat!("../migrations/", $db, "/0004_counters.sql")),
            ),
            (
                "0005_claims_groups_control.sql",
                include_str!(concat!(
                    "../migrations/",
                    $db,
                    "/0005_claims_groups_control.sql"
                )),
            ),
            (
                "0006_waiting.sql",
                include_str!(concat!("../migrations/", $db, "/0006_waiting.sql")),
            ),
            (
                "0007_records.sql",
                include_str!(concat!("../migrations/", $db, "/0007_records.sql")),
            ),
            (
                "0008_values.sql",
                include_str!(concat!("../migrations/", $db, "/0008_values.sql")),
            ),
            (
                "0009_workers.sql",
                include_str!(concat!("../migrations/", $db, "/0009_workers.sql")),
            ),
            (
                "0010_parked.sql",
                include_str!(concat!("../migrations/", $db, "/0010_parked.sql")),
            ),
        ]
    };
}

impl Dialect {
    /// The dialect a connection URL names by its scheme (`sqlite:...`, `postgres://...`,
    /// `mysql://...`), if this crate knows it.
    pub fn from_url(url: &str) -> Option<Dialect> {
        let scheme = url.split_once(':').map_or(url, |(scheme, _)| scheme);
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => Some(Dialect::Sqlite),
            "postgres" | "postgresql" => Some(Dialect::Postgres),
            "mysql" | "mariadb" => Some(Dialect::MySql),
            _ => None,
        }
    }

    /// The dialect's name, as drivers report it (`sqlite`, `postgres`, `mysql`).
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
            Dialect::MySql => "mysql",
        }
    }

    /// The migration files, in the order they apply, with their table placeholders.
    fn migrations(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Dialect::Sqlite => migrations!("sqlite"),
            Dialect::Postgres => migrations!("postgres"),
            Dialect::MySql => migrations!("mysql"),
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

/// What the tables named after the jobs table are called after it: `{table}_locks` and so
/// on (`counters` is the statistics table of before the v2 contract, which migrating drops).
const NAMED_AFTER: [&str; 9] = [
    "locks", "groups", "control", "waiting", "records", "values", "workers", "counters", "parked",
];

/// The names of the tables a store uses, checked to be plain SQL identifiers.
///
/// Names are pasted into SQL text (a table name cannot be a bound parameter), so only
/// `[A-Za-z_][A-Za-z0-9_]*` is accepted, at most 48 characters: nothing can be injected.
/// The locks, group counters, control, waiting-jobs, records, group values and worker
/// registry tables are named after the jobs table: `{table}_locks`, `{table}_groups`,
/// `{table}_control`, `{table}_waiting`, `{table}_records`, `{table}_values`,
/// `{table}_workers`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tables {
    jobs: String,
    failed: String,
}

impl Tables {
    /// Checks and keeps the names of the jobs table and the failed-jobs table.
    pub fn new(table: &str, failed_table: &str) -> Result<Tables> {
        check_identifier(table, "table")?;
        check_identifier(failed_table, "failed table")?;
        // PostgreSQL folds unquoted names to lower case and MySQL compares them without
        // case on some systems, so clashes are judged without case.
        let (lower, failed_lower) = (
            table.to_ascii_lowercase(),
            failed_table.to_ascii_lowercase(),
        );
        if lower == failed_lower {
            return Err(Error::Config(format!(
                "the jobs table and the failed-jobs table are both named `{table}`"
            )));
        }
        let clashes = NAMED_AFTER
            .iter()
            .chain(&["due", "claim", "pkey", "id_seq", "records_expires"])
            .any(|suffix| failed_lower == format!("{lower}_{suffix}"));
        if clashes {
            return Err(Error::Config(format!(
                "the failed-jobs table `{failed_table}` clashes with a name derived from `{table}`"
            )));
        }
        Ok(Tables {
            jobs: table.to_owned(),
            failed: failed_table.to_owned(),
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

    /// A table named after the jobs table: `{table}_{what}`.
    pub(crate) fn after(&self, what: &str) -> String {
        format!("{}_{what}", self.jobs)
    }

    /// Pastes the table names into a text's `{table}`, `{failed_table}` and
    /// `{locks_table}`-like placeholders.
    pub(crate) fn fill(&self, sql: &str) -> String {
        let mut sql = sql.replace("{failed_table}", &self.failed);
        for what in NAMED_AFTER {
            sql = sql.replace(&format!("{{{what}_table}}"), &self.after(what));
        }
        sql.replace("{table}", &self.jobs)
    }
}

impl Default for Tables {
    fn default() -> Self {
        Tables {
            jobs: DEFAULT_TABLE.to_owned(),
            failed: DEFAULT_FAILED_TABLE.to_owned(),
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

/// The schema of a store, the migration files one after the other for the dialect and the
/// table names given: what connecting applies, and what `runall table` prints for a team
/// that runs its own migration tool. Statements end with `;` at the end of a line.
///
/// Apply it once to a fresh database. The files that create tables are idempotent
/// (`CREATE ... IF NOT EXISTS`); `0005` adds columns, which SQLite and MySQL cannot do "if
/// not exists": to upgrade a database made before it, apply that file alone (connecting
/// with migrations on does it, skipping what is there). `0006` creates the waiting-jobs
/// table, `0007` the records table (jobs by id), `0008` the group values table (workflow
/// outputs) and `0009` the worker registry: a database made before them gets them by
/// applying those files alone (connecting does it, and touches no other table); `0010` the
/// table of jobs parked on a lock, likewise.
///
/// ```
/// use queue_database::{schema_sql, Dialect, Tables};
///
/// let tables = Tables::new("jobs", "failed_jobs")?;
/// let sql = schema_sql(Dialect::Sqlite, &tables);
/// assert!(sql.contains("CREATE TABLE IF NOT EXISTS jobs ("));
/// assert!(sql.contains("CREATE TABLE IF NOT EXISTS jobs_groups ("));
/// assert!(sql.contains("CREATE TABLE IF NOT EXISTS jobs_waiting ("));
/// assert!(sql.contains("CREATE TABLE IF NOT EXISTS jobs_records ("));
/// assert!(sql.contains("CREATE TABLE IF NOT EXISTS jobs_values ("));
/// assert!(sql.contains("CREATE TABLE IF NOT EXISTS jobs_workers ("));
/// assert!(schema_sql(Dialect::Postgres, &tables).contains("payload BYTEA"));
/// assert!(schema_sql(Dialect::MySql, &tables).contains("ENGINE=InnoDB"));
/// # Ok::<(), queue_core::Error>(())
/// ```
pub fn schema_sql(dialect: Dialect, tables: &Tables) -> String {
    schema_after(dialect, tables, 0)
}

/// The number of the last migration file: the version of the schema [`schema_sql`] makes.
pub(crate) fn last_version(dialect: Dialect) -> i64 {
    dialect
        .migrations()
        .iter()
        .map(|(file, _)| version_of(file))
        .max()
        .unwrap_or(0)
}

/// A migration file's number (`0006_waiting.sql` is 6).
fn version_of(file: &str) -> i64 {
    let digits = file.split('_').next().unwrap_or_default();
    digits.parse().unwrap_or(0)
}

/// The schema as [`schema_sql`] writes it, of the files numbered after `version` only: what
/// a database at that version lacks.
pub(crate) fn schema_after(dialect: Dialect, tables: &Tables, version: i64) -> String {
    let mut out = String::new();
    let newer = dialect
        .migrations()
        .iter()
        .filter(|(file, _)| version_of(file) > version);
    for (file, sql) in newer {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&format!("-- {dialect}/{file}\n"));
        out.push_str(&tables.fill(sql));
    }
    out
}

/// The schema for a connection URL (`runall table`): the dialect from the URL's scheme, the
/// tables from `table` and `failed_table` (`jobs` and `failed_jobs` when `None`), as
/// [`schema_sql`] writes it. Nothing is connected to.
///
/// ```
/// let sql = queue_database::schema_for_url("postgres://app@db/app", Some("app_jobs"), None)?;
/// assert!(sql.contains("CREATE TABLE IF NOT EXISTS app_jobs ("));
/// assert!(sql.contains("CREATE TABLE IF NOT EXISTS failed_jobs ("));
/// assert!(queue_database::schema_for_url("redis://x", None, None).is_err());
/// # Ok::<(), queue_core::Error>(())
/// ```
pub fn schema_for_url(
    url: &str,
    table: Option<&str>,
    failed_table: Option<&str>,
) -> Result<String> {
    let dialect = Dialect::from_url(url).ok_or_else(|| {
        Error::Config(format!(
            "`{}` is not a SQL database URL: the schema is printed for sqlite:, postgres://, postgresql://, mysql:// and mariadb:// URLs",
            queue_core::redact_url(url)
        ))
    })?;
    let tables = Tables::new(
        table.unwrap_or(DEFAULT_TABLE),
        failed_table.unwrap_or(DEFAULT_FAILED_TABLE),
    )?;
    Ok(schema_sql(dialect, &tables))
}

/// The statements of a schema text, one by one, comments and blank lines left out.
pub(crate) fn statements(schema: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in schema.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with("--") {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            out.push(current.trim().trim_end_matches(';').to_owned());
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_owned());
    }
    out
}

queue_core::__private::inventory::submit! {
    queue_core::SchemaRegistration {
        schemes: &["sqlite", "postgres", "postgresql", "mysql", "mariadb"],
        schema: |url, options| {
            schema_for_url(url, options.table.as_deref(), options.failed_table.as_deref())
        },
    }
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
        for clash in [
            "jobs",
            "JOBS",
            "jobs_locks",
            "jobs_groups",
            "jobs_waiting",
            "Jobs_Waiting",
            "jobs_due",
            "Jobs_Claim",
            "jobs_records",
            "jobs_records_expires",
            "jobs_values",
            "jobs_workers",
        ] {
            assert!(Tables::new("jobs", clash).is_err(), "{clash}");
        }
    }

    #[test]
    fn every_dialect_has_its_tables() {
        let tables = Tables::new("q", "fq").unwrap();
        for dialect in [Dialect::Sqlite, Dialect::Postgres, Dialect::MySql] {
            let sql = schema_sql(dialect, &tables);
            assert!(!sql.contains('{') && !sql.contains('}'), "{dialect}: {sql}");
            for table in [
                "q",
                "fq",
                "q_locks",
                "q_groups",
                "q_control",
                "q_waiting",
                "q_records",
                "q_values",
                "q_workers",
                "q_parked",
            ] {
                let create = format!("CREATE TABLE IF NOT EXISTS {table} (");
                assert!(sql.contains(&create), "{dialect}: {table}");
            }
            assert!(sql.contains("DROP TABLE IF EXISTS q_counters"), "{dialect}");
            let statements = statements(&sql);
            assert!(statements.len() >= 10, "{dialect}: {statements:?}");
            assert!(statements
                .iter()
                .all(|s| !s.ends_with(';') && !s.is_empty()));
            // A database at version 5 lacks the waiting-jobs and records tables alone.
            assert_eq!(last_version(dialect), 10, "{dialect}");
            let since_5 = super::statements(&schema_after(dialect, &tables, 5));
            assert!(
                since_5[0].starts_with("CREATE TABLE IF NOT EXISTS q_waiting ("),
                "{dialect}: {since_5:?}"
            );
            let since_6 = super::statements(&schema_after(dialect, &tables, 6));
            assert_eq!(since_5[1..], since_6[..], "{dialect}");
            assert!(
                since_6[0].starts_with("CREATE TABLE IF NOT EXISTS q_records ("),
                "{dialect}: {since_6:?}"
            );
            let since_7 = super::statements(&schema_after(dialect, &tables, 7));
            let parked_statements = if dialect == Dialect::MySql { 1 } else { 2 };
            assert_eq!(
                since_7.len(),
                2 + parked_statements,
                "{dialect}: {since_7:?}"
            );
            assert!(
                since_7[0].starts_with("CREATE TABLE IF NOT EXISTS q_values ("),
                "{dialect}: {since_7:?}"
            );
            let since_8 = super::statements(&schema_after(dialect, &tables, 8));
            assert!(
                since_8[0].starts_with("CREATE TABLE IF NOT EXISTS q_workers ("),
                "{dialect}: {since_8:?}"
            );
            let since_9 = super::statements(&schema_after(dialect, &tables, 9));
            assert_eq!(since_8[1..], since_9[..], "{dialect}");
            assert!(
                since_9[0].starts_with("CREATE TABLE IF NOT EXISTS q_parked ("),
                "{dialect}: {since_9:?}"
            );
            assert!(
                since_6
                    .iter()
                    .take_while(|s| !s.contains("q_values"))
                    .all(|s| s.contains("q_records") && !s.contains("q_waiting")),
                "{dialect}: {since_6:?}"
            );
            assert_eq!(schema_after(dialect, &tables, 10), "", "{dialect}");
        }
    }

    #[test]
    fn dialects_and_schemas_by_url() {
        let cases = [
            ("sqlite://jobs.db", Some(Dialect::Sqlite)),
            ("sqlite::memory:", Some(Dialect::Sqlite)),
            ("postgres://u@h/db", Some(Dialect::Postgres)),
            ("postgresql://h/db", Some(Dialect::Postgres)),
            ("mysql://root@h/db", Some(Dialect::MySql)),
            ("mariadb://root@h/db", Some(Dialect::MySql)),
            ("redis://x", None),
        ];
        for (url, dialect) in cases {
            assert_eq!(Dialect::from_url(url), dialect, "{url}");
        }
        let sql = schema_for_url("mysql://root@h/db", Some("a"), Some("b")).unwrap();
        assert!(sql.contains("CREATE TABLE IF NOT EXISTS b ("));
        assert!(schema_for_url("memcached://h", None, None).is_err());
        assert!(schema_for_url("postgres://h/db", Some("bad name"), None).is_err());
    }
}
