//! PostgreSQL: [`PgStorage`], for any number of workers on any number of machines, woken by
//! `LISTEN`.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use queue_core::{Error, ReserveRequest, Reserved, Result};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgQueryResult};
use sqlx::{PgConnection, Postgres};
use tokio::task::JoinHandle;

use crate::hot::Hot;
use crate::options::SqlOptions;
use crate::retry::Conflict;
use crate::schema::{Dialect, Tables};
use crate::sql::sealed::{AckedAndReserved, Backend, Deferred, Io, Reserving};
use crate::sql::Arg;
use crate::statements::fill;
use crate::store::{db, due, millis, reserved_rows, Open, SqlStore, Tx};
use crate::wake::Waker;

/// A queue store in a PostgreSQL database. See [`SqlStore`] and the
/// [crate docs](crate#postgresql).
pub type PgStorage = SqlStore<Postgres>;

/// How to open a [`PgStorage`]: a builder, with PostgreSQL's own knobs.
///
/// `postgres://user:password@host:port/database?param=value` (or `postgresql://`), as
/// `libpq` and sqlx read them: `sslmode`, `sslrootcert`, `application_name`, `options` and
/// the rest of sqlx's parameters pass through. A host may be a Unix socket directory
/// (`postgres://%2Fvar%2Frun%2Fpostgresql/app`).
pub type PgOptions = SqlOptions<Postgres>;

/// The oldest server with everything the statements use (`gen_random_uuid()` is built in
/// from 13; `SKIP LOCKED` and generated columns are older).
const MIN_VERSION: i32 = 130_000;

/// PostgreSQL's knobs in [`PgOptions`].
#[derive(Debug, Clone)]
pub struct PgKnobs {
    listen: bool,
    synchronous_worker_commits: bool,
}

impl Default for PgKnobs {
    fn default() -> Self {
        PgKnobs {
            listen: true,
            synchronous_worker_commits: false,
        }
    }
}

impl SqlOptions<Postgres> {
    /// Whether idle workers `LISTEN` for dispatches (default true): a push notifies, in its
    /// own transaction, and waiting workers wake within milliseconds instead of at their
    /// next poll. Without it, workers poll every `--sleep`.
    pub fn listen(mut self, listen: bool) -> Self {
        self.knobs.listen = listen;
        self
    }

    /// Whether a worker's own writes (reserving, settling, extending) wait for the
    /// write-ahead log to reach the disk (default false).
    ///
    /// Pushes always do: a job is durable once `push` returns. A worker's writes do not by
    /// default (`synchronous_commit = off` for them only), which makes a worker several times
    /// faster on an ordinary disk. What it costs: if the *server machine* crashes (not a
    /// clean restart, which flushes everything), the last fraction of a second of those
    /// writes can be lost, so a job acknowledged just before the crash runs again, with the
    /// effects of its settle. That is the at-least-once promise every driver makes anyway.
    pub fn synchronous_worker_commits(mut self, synchronous: bool) -> Self {
        self.knobs.synchronous_worker_commits = synchronous;
        self
    }

    pub(crate) fn connect_options(&self) -> Result<PgConnectOptions> {
        let url = &self.url;
        let redacted = || queue_core::redact_url(url);
        if !matches!(url.split_once("://"), Some(("postgres" | "postgresql", _))) {
            return Err(Error::Config(format!(
                "`{}` is not a PostgreSQL URL: it must start with postgres:// or postgresql://",
                redacted()
            )));
        }
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::Config(format!("bad PostgreSQL URL `{}`: {e}", redacted())))?;
        // The server's NOTICEs ("relation ... already exists, skipping" from every
        // `CREATE ... IF NOT EXISTS` of the migration at each connect) are not worth a log
        // line: warnings and errors only, unless the URL says otherwise.
        if options
            .get_options()
            .is_some_and(|o| o.contains("client_min_messages"))
        {
            return Ok(options);
        }
        Ok(options.options([("client_min_messages", "warning")]))
    }
}

/// What a PostgreSQL store keeps of its own: its reservation statements and its listener.
#[derive(Debug)]
pub struct PgState {
    /// Binds: queues (JSON), name or NULL (twice), limit (twice), lease ms.
    reserve: String,
    /// Binds: leases (JSON), then as `reserve`.
    ack_reserve: String,
    /// Binds: queues, names, payloads, absolute times (NULL: use the delay), delays in ms,
    /// as arrays. Notifies each queue's channel. Returns the ids in order.
    push_all: String,
    channel: String,
    listen: Option<PgConnectOptions>,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for PgState {
    fn drop(&mut self) {
        Postgres::close(self);
    }
}

/// The reservation, as the statements `picked` (ids, locked) and `upd` (the update).
/// The queues are taken in order by a nested loop over the list; each queue's next due jobs
/// come from the `(queue, due_at, id)` index, first due first, skipping rows another worker
/// holds (SKIP LOCKED: no worker ever waits for another). The outer LIMIT stops the loop as
/// soon as the batch is full, so no row beyond it is locked; an `ORDER BY` there would
/// evaluate every queue first. `available_at = due_at` (the old row's value) records when
/// the job became available for this reservation.
fn reserve_parts(skip: &str) -> (String, String) {
    let picked = format!(
        "SELECT j.id FROM jsonb_array_elements_text(?::jsonb) AS q(queue_name) \
         CROSS JOIN LATERAL (SELECT id FROM {{table}} WHERE queue = q.queue_name AND due_at <= {{now}} \
         AND (?::text IS NULL OR name = ?::text){skip} ORDER BY due_at, id LIMIT ? FOR UPDATE SKIP LOCKED) j \
         LIMIT ?"
    );
    let update =
        "UPDATE {table} t SET attempts = t.attempts + 1, token = gen_random_uuid()::text, \
         available_at = t.due_at, reserved_until = {now} + ?, \
         claim = CASE WHEN t.unique_until = 'started' THEN NULL ELSE t.claim END \
         WHERE t.id = ANY(ARRAY(SELECT id FROM picked)) \
         RETURNING t.id, t.queue, t.token, t.attempts, t.name, t.payload, t.available_at"
            .to_owned();
    (picked, update)
}

/// Keeps a `LISTEN` on `channel` alive for as long as the store lives (the store aborts the
/// task when dropped), reconnecting with a backoff when the connection is lost.
async fn listen_loop(connect: PgConnectOptions, channel: String, waker: Arc<Waker>) {
    // A pool of its own, so the listening connection never takes one of the store's.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy_with(connect);
    let mut backoff = Duration::from_millis(100);
    let mut failures = 0u32;
    loop {
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.ignore_pool_close_event(true);
            listener.eager_reconnect(false);
            listener.listen(&channel).await?;
            Ok::<_, sqlx::Error>(listener)
        }
        .await;
        let mut listener = match listener {
            Ok(listener) => listener,
            Err(error) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(%error, channel, retry_in = ?backoff, "could not LISTEN for dispatches: idle workers poll until it works");
                } else {
                    tracing::debug!(%error, channel, retry_in = ?backoff, "could not LISTEN for dispatches");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if failures > 0 {
            tracing::info!(channel, "listening for dispatches again");
        }
        (failures, backoff) = (0, Duration::from_millis(100));
        waker.set_listening(true);
        let error = loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => waker.send(notification.payload()),
                Ok(None) => break None,
                Err(error) => break Some(error),
            }
        };
        waker.set_listening(false);
        let error = error.map(|e| e.to_string()).unwrap_or_default();
        tracing::warn!(%error, channel, "lost the LISTEN connection: reconnecting");
    }
}

impl Backend for Postgres {
    const DRIVER: &'static str = "postgres";
    type Knobs = PgKnobs;
    type State = PgState;
    const DIALECT: Dialect = Dialect::Postgres;
    // `statement_timestamp()` is stable within a statement, so the planner can compare an
    // index column with it, and unlike `now()` it moves on between the statements of a long
    // transaction (a dispatch inside the application's transaction).
    const NOW: &'static str = "(EXTRACT(EPOCH FROM statement_timestamp()) * 1000)::BIGINT";
    const FOR_UPDATE: &'static str = " FOR UPDATE OF t";
    const BLOB: &'static str = "BYTEA";
    const NO_BYTES: &'static str = "''::bytea";
    const UNHEX: &'static str = "decode({x}, 'hex')";
    const ROWS: &'static str = "(SELECT {columns} FROM jsonb_array_elements(?::jsonb) AS e) AS l";
    const INT: &'static str = "(e->>{i})::int8 AS {name}";
    const STR: &'static str = "e->>{i} AS {name}";
    // Ids are drawn in the order the rows are given, so sorting them gives the jobs' order.
    // The notification is part of the statement, so it is sent if and only if the insert
    // commits: a dispatch inside a transaction that rolls back wakes nobody. PostgreSQL
    // folds identical notifications of one transaction into one.
    const RETURNING: &'static str = "WITH ins AS ({insert}{skip} RETURNING id, queue), \
         woke AS (SELECT count(pg_notify('{channel}', q.queue)) AS n FROM (SELECT DISTINCT queue FROM ins) q) \
         SELECT ins.id FROM ins, woke ORDER BY ins.id";
    const NOTIFY: Option<&'static str> = Some(
        "SELECT count(pg_notify('{channel}', q.value)) \
         FROM (SELECT DISTINCT value FROM jsonb_array_elements_text(?::jsonb)) q",
    );
    // A loose index scan: one index probe per distinct queue, however many jobs.
    const QUEUES: &'static str = "WITH RECURSIVE q AS ( \
           (SELECT queue FROM {table} ORDER BY queue LIMIT 1) \
           UNION ALL \
           SELECT (SELECT t.queue FROM {table} t WHERE t.queue > q.queue ORDER BY t.queue LIMIT 1) \
           FROM q WHERE q.queue IS NOT NULL \
         ) SELECT queue FROM q WHERE queue IS NOT NULL";
    const INSERT_ALL: bool = true;
    // `CREATE TABLE IF NOT EXISTS` is not safe against itself in PostgreSQL: processes that
    // start together take turns (an arbitrary constant advisory-lock key).
    const MIGRATE: (&'static str, &'static str) = (
        "BEGIN; SELECT pg_advisory_xact_lock(8175495034958250545)",
        "COMMIT",
    );
    const MIGRATE_READS_HERE: bool = false;
    const ACK_EFFECTS_BY_DELETE: bool = true;

    fn rows_affected(done: &PgQueryResult) -> u64 {
        done.rows_affected()
    }

    async fn open(options: &SqlOptions<Postgres>, tables: &Tables) -> Result<Open<Postgres>> {
        let connect = options.connect_options()?;
        options.first_connection(&connect).await?;
        let pool: PgPool = options
            .pool()
            .connect_with(connect.clone())
            .await
            .map_err(db::<Postgres>)?;
        let version: String = sqlx::query_scalar("SELECT current_setting('server_version_num')")
            .fetch_one(&pool)
            .await
            .map_err(db::<Postgres>)?;
        if version.trim().parse::<i32>().unwrap_or(0) < MIN_VERSION {
            return Err(Error::Config(format!(
                "PostgreSQL 13 or newer is needed (for gen_random_uuid()), this server is version {version}"
            )));
        }
        // The store's own connections. The planner settings make every plan the index plan
        // whatever the statistics say: a plan cached while a table held a thousand rows (or
        // had never been analysed) must not become a sort of a million rows later. They also
        // make the cost of an unavoidable sort look huge, which would have the server compile
        // the statement (JIT) at every run: these statements are far too short for that.
        // And each statement is planned once per connection: a list's length is unknown to
        // the planner, which would otherwise plan it again at every run (its estimate for the
        // generic plan looks worse than for one with the values), for longer than it runs.
        let synchronous = if options.knobs.synchronous_worker_commits {
            "on"
        } else {
            "off"
        };
        let internal = options.pool().connect_lazy_with(connect.clone().options([
            ("synchronous_commit", synchronous),
            ("enable_seqscan", "off"),
            ("enable_sort", "off"),
            ("jit", "off"),
            ("plan_cache_mode", "force_generic_plan"),
        ]));
        // A few connections kept at hand (a worker uses two at a time); the others stay in
        // the pools.
        let keep = (options.connections() / 2).clamp(1, 4) as usize;
        let fill = |sql: &str| fill::<Postgres>(tables, sql);
        let (picked, update) = reserve_parts("");
        let (skipping, _) = reserve_parts(" AND id NOT IN (SELECT id FROM gone)");
        let ack = crate::statements::ack::<Postgres>();
        Ok(Open {
            main: Hot::new(internal, keep),
            reads: None,
            pushes: Some(Hot::new(pool, keep.min(2))),
            txs: None,
            durable: true,
            returning: true,
            id_step: 1,
            state: PgState {
                reserve: fill(&format!("WITH picked AS ({picked}) {update}")),
                ack_reserve: fill(&format!(
                    "WITH gone AS ({ack}), picked AS ({skipping}), upd AS ({update}) \
                     SELECT id, NULL::text, token, NULL::int4, NULL::text, NULL::bytea, NULL::int8, 0 FROM gone \
                     UNION ALL SELECT id, queue, token, attempts, name, payload, available_at, 1 FROM upd"
                )),
                // Ids are drawn in the order of the arrays, so sorting them gives the jobs'.
                push_all: fill(&Postgres::RETURNING.replace("{skip}", "").replace(
                    "{insert}",
                    "INSERT INTO {table} (queue, name, payload, attempts, available_at, created_at) \
                     SELECT j.queue, j.name, j.payload, 0, COALESCE(j.at, {now} + j.delay), {now} \
                     FROM unnest($1::text[], $2::text[], $3::bytea[], $4::int8[], $5::int8[]) \
                     WITH ORDINALITY AS j(queue, name, payload, at, delay, position) ORDER BY j.position",
                )),
                channel: channel(tables),
                listen: options.knobs.listen.then_some(connect),
                listener: Mutex::new(None),
            },
        })
    }

    /// SQLSTATE 40P01 (`deadlock_detected`), 40001 (`serialization_failure`, under a
    /// `REPEATABLE READ` or `SERIALIZABLE` default) and 55P03 (`lock_not_available`, a
    /// `lock_timeout` set on the server or the role).
    fn conflict(error: &sqlx::Error) -> Option<Conflict> {
        let error = error
            .as_database_error()?
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()?;
        match error.code() {
            "40P01" => Some(Conflict::Deadlock),
            "40001" => Some(Conflict::SerializationFailure),
            "55P03" => Some(Conflict::LockWaitTimeout),
            _ => None,
        }
    }

    fn reserve(on: Reserving<'_, Postgres>) -> BoxFuture<'_, Result<Vec<Reserved>>> {
        Box::pin(async move {
            let queues = serde_json::to_string(&on.request.queues)
                .map_err(|e| Error::backend("postgres", e))?;
            let args = reserve_args(&queues, on.request);
            let rows = Postgres::fetch(on.conn, &on.store.state().reserve, &args)
                .await
                .map_err(db::<Postgres>)?;
            reserved_rows::<Postgres>(&rows, &on.request.queues)
        })
    }

    fn insert_all<'a>(
        store: &'a SqlStore<Postgres>,
        conn: &'a mut PgConnection,
        jobs: &'a [queue_core::NewJob],
    ) -> BoxFuture<'a, sqlx::Result<Vec<i64>>> {
        Box::pin(async move {
            let (mut queues, mut names, mut payloads, mut ats, mut delays) =
                (vec![], vec![], vec![], vec![], vec![]);
            for job in jobs {
                let (at, delay) = due(job.available);
                queues.push(job.queue.as_str());
                names.push(job.name.as_str());
                payloads.push(job.payload.as_slice());
                ats.push(at);
                delays.push(delay);
            }
            sqlx::query_scalar(&store.state().push_all)
                .bind(queues)
                .bind(names)
                .bind(payloads)
                .bind(ats)
                .bind(delays)
                .fetch_all(conn)
                .await
        })
    }

    /// One statement, without a reservation or with it.
    fn ack_tx(_store: &SqlStore<Postgres>, _fetch: bool) -> Tx {
        Tx::No
    }

    fn ack<'a>(
        store: &'a SqlStore<Postgres>,
        conn: &'a mut PgConnection,
        _deferred: &'a mut Deferred,
        leases: &'a [(i64, &'a str)],
        fetch: Option<&'a ReserveRequest>,
    ) -> BoxFuture<'a, Result<AckedAndReserved>> {
        Box::pin(async move {
            let Some(request) = fetch else {
                return store
                    .ack_json(conn, leases)
                    .await
                    .map(|acked| (acked, Vec::new()));
            };
            let queues = serde_json::to_string(&request.queues)
                .map_err(|e| Error::backend("postgres", e))?;
            let leases =
                serde_json::to_string(leases).map_err(|e| Error::backend("postgres", e))?;
            let mut args = vec![Arg::Text(&leases)];
            args.extend(reserve_args(&queues, request));
            let rows = Postgres::fetch(conn, &store.state().ack_reserve, &args)
                .await
                .map_err(db::<Postgres>)?;
            let (mut acked, mut taken) = (Vec::new(), Vec::new());
            for row in rows {
                if Postgres::int(&row, 7).map_err(db::<Postgres>)? == Some(0) {
                    let id = Postgres::int(&row, 0)
                        .map_err(db::<Postgres>)?
                        .unwrap_or_default();
                    acked.push((id, Postgres::text(&row, 2).map_err(db::<Postgres>)?));
                } else {
                    taken.push(row);
                }
            }
            Ok((acked, reserved_rows::<Postgres>(&taken, &request.queues)?))
        })
    }

    fn listening(store: &SqlStore<Postgres>, patience: Duration) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let state = store.state();
            let Some(connect) = &state.listen else {
                return false;
            };
            {
                let mut task = state.listener.lock().unwrap_or_else(|p| p.into_inner());
                if task.is_none() {
                    let waker = store.waker().clone();
                    *task = Some(tokio::spawn(listen_loop(
                        connect.clone(),
                        state.channel.clone(),
                        waker,
                    )));
                }
            }
            store.waker().listening(patience).await
        })
    }

    fn close(state: &PgState) {
        if let Some(task) = state
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

/// The channel pushes notify: `{table}_added` (unquoted names fold to lower case).
fn channel(tables: &Tables) -> String {
    format!("{}_added", tables.jobs().to_ascii_lowercase())
}

fn reserve_args<'a>(queues: &'a str, request: &'a ReserveRequest) -> [Arg<'a>; 6] {
    let name = request.name.as_deref();
    let limit = i64::try_from(request.limit.max(1)).unwrap_or(i64::MAX);
    [
        Arg::Text(queues),
        Arg::OptText(name),
        Arg::OptText(name),
        Arg::Int(limit),
        Arg::Int(limit),
        Arg::Int(millis(request.lease)),
    ]
}

impl SqlStore<Postgres> {
    /// The notification channel pushes signal on (`{table}_added`, lower case).
    pub fn channel(&self) -> &str {
        &self.state().channel
    }

    /// The server's plan for a reservation of 8 jobs over `queues` (`EXPLAIN`), for tests
    /// that check it reads the `{table}_due` index rather than the whole table.
    #[doc(hidden)]
    pub async fn explain_reserve(&self, queues: &[String]) -> Result<String> {
        let mut conn = self.main().get().await.map_err(db::<Postgres>)?;
        let queues = serde_json::to_string(queues).map_err(|e| Error::backend("postgres", e))?;
        let request = ReserveRequest::new(Vec::<String>::new(), Duration::from_secs(60), 8);
        let sql = format!("EXPLAIN {}", self.state().reserve);
        let rows = Postgres::fetch(&mut conn, &sql, &reserve_args(&queues, &request))
            .await
            .map_err(db::<Postgres>)?;
        conn.keep();
        let lines: Result<Vec<String>> = rows
            .iter()
            .map(|row| Postgres::text(row, 0).map_err(db::<Postgres>))
            .collect();
        Ok(lines?.join("\n"))
    }
}
