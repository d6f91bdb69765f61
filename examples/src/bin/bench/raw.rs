//! The raw ceiling of a backend: the simplest loop that does the work the e2e columns time
//! (claim waiting jobs, then delete them), with the backend's own client, in batches of 100,
//! on a table or key of its own. `bench --raw` prints our e2e figure as a share of it.
//!
//! - SQLite: one connection (one writer), WAL, `synchronous = NORMAL` (our default):
//!   `UPDATE .. WHERE id IN (SELECT .. LIMIT 100) RETURNING id`, then `DELETE .. WHERE id IN`.
//! - PostgreSQL: 8 connections, the same with `FOR UPDATE SKIP LOCKED`, `DELETE .. = ANY($1)`.
//! - MySQL / MariaDB: 8 connections; a transaction of `SELECT .. FOR UPDATE SKIP LOCKED` and
//!   `UPDATE`, then `DELETE .. WHERE id IN`.
//! - Redis: 8 connections, each sending 100 claim scripts (`RPOP` into an in-flight sorted
//!   set) in one pipeline, then 100 `ZREM` + `HDEL` in one pipeline.
//! - A directory (`file://`): one thread; per batch of 100, each job file renamed from
//!   `ready/` to `reserved/` and read (a reservation is not synced: after a crash the job is
//!   simply ready again), then the 100 files removed and `reserved/` synced once (the
//!   driver's steps, without its names, headers, locks and listing cache; the directory
//!   listed once).
//!
//! memcached and Redis Cluster have no such loop here (their figure is "-"): a queue on
//! memcached is a structure of compare-and-swaps with no batched form.

use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::{Connection, Executor};

const BATCH: usize = 100;
const TASKS: usize = 8;
const PAYLOAD: &str = r#"{"v":1,"name":"noop","data":{"sent_us":0}}"#;

/// The raw drain rate for `url` (jobs/s), or `None` for a backend without a loop here.
pub(crate) async fn ceiling(url: &str, n: usize) -> anyhow::Result<Option<f64>> {
    let table = format!("raw_{}", std::process::id());
    let elapsed = if let Some(path) = url.strip_prefix("sqlite://") {
        sqlite(path, &table, n).await?
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        postgres(url, &table, n).await?
    } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
        mysql(&url.replacen("mariadb://", "mysql://", 1), &table, n).await?
    } else if url.starts_with("redis://") {
        redis_raw(url, &table, n).await?
    } else if let Some(path) = url.strip_prefix("file://") {
        let dir = std::path::PathBuf::from(format!("{path}.raw"));
        tokio::task::spawn_blocking(move || directory(&dir, n)).await??
    } else {
        return Ok(None);
    };
    Ok(Some(n as f64 / elapsed.as_secs_f64()))
}

fn placeholders(n: usize, first: usize, dollar: bool) -> String {
    (0..n)
        .map(|i| {
            if dollar {
                format!("${}", first + i)
            } else {
                "?".to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn sqlite(path: &str, table: &str, n: usize) -> anyhow::Result<Duration> {
    use sqlx::sqlite::{
        SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous,
    };
    let file = format!("{path}.raw");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{file}{suffix}"));
    }
    let options = SqliteConnectOptions::new()
        .filename(&file)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal);
    let mut conn = SqliteConnection::connect_with(&options).await?;
    conn.execute(
        format!(
            "CREATE TABLE {table} (id INTEGER PRIMARY KEY, queue TEXT NOT NULL, \
             available_at INTEGER NOT NULL, reserved_until INTEGER, payload BLOB NOT NULL); \
             CREATE INDEX {table}_ready ON {table} (queue, available_at, id) \
             WHERE reserved_until IS NULL"
        )
        .as_str(),
    )
    .await?;
    let mut tx = conn.begin().await?;
    for _ in 0..n.div_ceil(500) {
        let values = vec!["('bench', 0, NULL, ?)"; 500].join(",");
        let sql = format!(
            "INSERT INTO {table} (queue, available_at, reserved_until, payload) VALUES {values}"
        );
        let mut q = sqlx::query(&sql);
        for _ in 0..500 {
            q = q.bind(PAYLOAD.as_bytes());
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    let claim = format!(
        "UPDATE {table} SET reserved_until = ?1 WHERE id IN (SELECT id FROM {table} \
         WHERE queue = 'bench' AND reserved_until IS NULL AND available_at <= ?1 \
         ORDER BY available_at, id LIMIT {BATCH}) RETURNING id"
    );
    let started = Instant::now();
    loop {
        let ids: Vec<i64> = sqlx::query_scalar(&claim)
            .bind(now_ms())
            .fetch_all(&mut conn)
            .await?;
        if ids.is_empty() {
            break;
        }
        let sql = format!(
            "DELETE FROM {table} WHERE id IN ({})",
            placeholders(ids.len(), 1, false)
        );
        let mut q = sqlx::query(&sql);
        for id in &ids {
            q = q.bind(id);
        }
        q.execute(&mut conn).await?;
    }
    let elapsed = started.elapsed();
    conn.close().await?;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{file}{suffix}"));
    }
    Ok(elapsed)
}

async fn postgres(url: &str, table: &str, n: usize) -> anyhow::Result<Duration> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(TASKS as u32)
        .min_connections(TASKS as u32)
        .connect(url)
        .await?;
    pool.execute(
        format!(
            "DROP TABLE IF EXISTS {table}; \
             CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, queue TEXT NOT NULL, \
             available_at BIGINT NOT NULL, reserved_until BIGINT, payload BYTEA NOT NULL); \
             CREATE INDEX {table}_ready ON {table} (queue, available_at, id) \
             WHERE reserved_until IS NULL"
        )
        .as_str(),
    )
    .await?;
    sqlx::query(&format!(
        "INSERT INTO {table} (queue, available_at, payload) \
         SELECT 'bench', 0, convert_to($1, 'UTF8') FROM generate_series(1, $2)"
    ))
    .bind(PAYLOAD)
    .bind(n as i64)
    .execute(&pool)
    .await?;
    pool.execute(format!("ANALYZE {table}").as_str()).await?;
    let claim = format!(
        "UPDATE {table} SET reserved_until = $1 WHERE id IN (SELECT id FROM {table} \
         WHERE queue = 'bench' AND reserved_until IS NULL AND available_at <= $1 \
         ORDER BY available_at, id LIMIT {BATCH} FOR UPDATE SKIP LOCKED) RETURNING id"
    );
    let delete = format!("DELETE FROM {table} WHERE id = ANY($1)");
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (pool, claim, delete) = (pool.clone(), claim.clone(), delete.clone());
            tokio::spawn(async move {
                loop {
                    let ids: Vec<i64> = sqlx::query_scalar(&claim)
                        .bind(now_ms())
                        .fetch_all(&pool)
                        .await?;
                    if ids.is_empty() {
                        return anyhow::Ok(());
                    }
                    sqlx::query(&delete).bind(&ids).execute(&pool).await?;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    pool.execute(format!("DROP TABLE {table}").as_str()).await?;
    pool.close().await;
    Ok(elapsed)
}

async fn mysql(url: &str, table: &str, n: usize) -> anyhow::Result<Duration> {
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(TASKS as u32)
        .min_connections(TASKS as u32)
        .connect(url)
        .await?;
    pool.execute(format!("DROP TABLE IF EXISTS {table}").as_str())
        .await?;
    pool.execute(
        format!(
            "CREATE TABLE {table} (id BIGINT AUTO_INCREMENT PRIMARY KEY, queue VARCHAR(64) NOT NULL, \
             available_at BIGINT NOT NULL, reserved_until BIGINT NULL, payload BLOB NOT NULL, \
             KEY ready (queue, reserved_until, available_at, id)) ENGINE=InnoDB"
        )
        .as_str(),
    )
    .await?;
    for _ in 0..n.div_ceil(1000) {
        let values = vec!["('bench', 0, NULL, ?)"; 1000].join(",");
        let sql = format!(
            "INSERT INTO {table} (queue, available_at, reserved_until, payload) VALUES {values}"
        );
        let mut q = sqlx::query(&sql);
        for _ in 0..1000 {
            q = q.bind(PAYLOAD.as_bytes());
        }
        q.execute(&pool).await?;
    }
    let select = format!(
        "SELECT id FROM {table} WHERE queue = 'bench' AND reserved_until IS NULL \
         AND available_at <= ? ORDER BY available_at, id LIMIT {BATCH} FOR UPDATE SKIP LOCKED"
    );
    let table = table.to_owned();
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (pool, select, table) = (pool.clone(), select.clone(), table.clone());
            tokio::spawn(async move {
                loop {
                    // InnoDB reports deadlocks between the claims' gap locks and the
                    // deletes: a real client retries them, and so does this loop.
                    match mysql_step(&pool, &select, &table).await {
                        Ok(true) => {}
                        Ok(false) => return anyhow::Ok(()),
                        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("40001") => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    pool.execute(format!("DROP TABLE {table}").as_str()).await?;
    pool.close().await;
    Ok(elapsed)
}

/// One claim of up to 100 jobs and their delete; false when nothing was left.
async fn mysql_step(pool: &sqlx::MySqlPool, select: &str, table: &str) -> sqlx::Result<bool> {
    let now = now_ms();
    let mut tx = pool.begin().await?;
    let ids: Vec<i64> = sqlx::query_scalar(select)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
    if ids.is_empty() {
        tx.commit().await?;
        return Ok(false);
    }
    let list = placeholders(ids.len(), 1, false);
    let update = format!("UPDATE {table} SET reserved_until = ? WHERE id IN ({list})");
    let mut q = sqlx::query(&update).bind(now + 60_000);
    for id in &ids {
        q = q.bind(id);
    }
    q.execute(&mut *tx).await?;
    tx.commit().await?;
    let delete = format!("DELETE FROM {table} WHERE id IN ({list})");
    loop {
        let mut q = sqlx::query(&delete);
        for id in &ids {
            q = q.bind(id);
        }
        match q.execute(pool).await {
            Ok(_) => return Ok(true),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("40001") => {}
            Err(e) => return Err(e),
        }
    }
}

const CLAIM: &str = "local j = redis.call('RPOP', KEYS[1]) \
    if j then redis.call('ZADD', KEYS[2], ARGV[1], j) end return j";

async fn redis_raw(url: &str, prefix: &str, n: usize) -> anyhow::Result<Duration> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let (ready, inflight, jobs) = (
        format!("{prefix}:ready"),
        format!("{prefix}:inflight"),
        format!("{prefix}:jobs"),
    );
    let _: () = redis::cmd("DEL")
        .arg(&ready)
        .arg(&inflight)
        .arg(&jobs)
        .query_async(&mut conn)
        .await?;
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("HSET").arg(&jobs).arg(id).arg(PAYLOAD).ignore();
            pipe.cmd("LPUSH").arg(&ready).arg(id).ignore();
        }
        let _: () = pipe.query_async(&mut conn).await?;
    }
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(CLAIM)
        .query_async(&mut conn)
        .await?;
    let started = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (client, sha) = (client.clone(), sha.clone());
            let (ready, inflight, jobs) = (ready.clone(), inflight.clone(), jobs.clone());
            tokio::spawn(async move {
                // A connection of its own per task: 8 sockets, as 8 clients.
                let mut conn = client.get_multiplexed_async_connection().await?;
                loop {
                    let mut pipe = redis::pipe();
                    for _ in 0..BATCH {
                        pipe.cmd("EVALSHA")
                            .arg(&sha)
                            .arg(2)
                            .arg(&ready)
                            .arg(&inflight)
                            .arg(now_ms() + 60_000);
                    }
                    let got: Vec<Option<String>> = pipe.query_async(&mut conn).await?;
                    let ids: Vec<String> = got.into_iter().flatten().collect();
                    if ids.is_empty() {
                        return anyhow::Ok(());
                    }
                    let mut pipe = redis::pipe();
                    for id in &ids {
                        pipe.cmd("ZREM").arg(&inflight).arg(id).ignore();
                        pipe.cmd("HDEL").arg(&jobs).arg(id).ignore();
                    }
                    let _: () = pipe.query_async(&mut conn).await?;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await?.context("a raw Redis task")?;
    }
    Ok(started.elapsed())
}

/// Syncs a directory (its entries: renames, creations, removals).
fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The file driver's durable work per job, in batches of [`BATCH`], on one thread.
fn directory(root: &std::path::Path, n: usize) -> anyhow::Result<Duration> {
    use std::io::Write;
    let _ = std::fs::remove_dir_all(root);
    let (ready, reserved) = (root.join("ready"), root.join("reserved"));
    std::fs::create_dir_all(&ready)?;
    std::fs::create_dir_all(&reserved)?;
    let at = now_ms();
    for i in 0..n {
        let mut f = std::fs::File::create(ready.join(format!("{at:015}-{i:024}-0")))?;
        f.write_all(PAYLOAD.as_bytes())?;
    }
    sync_dir(&ready)?;
    let mut names: Vec<String> = std::fs::read_dir(&ready)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    names.sort_unstable();
    let started = Instant::now();
    let mut bytes = 0;
    for batch in names.chunks(BATCH) {
        for name in batch {
            let to = reserved.join(name);
            std::fs::rename(ready.join(name), &to)?;
            bytes += std::fs::read(&to)?.len();
        }
        for name in batch {
            std::fs::remove_file(reserved.join(name))?;
        }
        sync_dir(&reserved)?;
    }
    let elapsed = started.elapsed();
    anyhow::ensure!(bytes == n * PAYLOAD.len(), "read {bytes} bytes");
    std::fs::remove_dir_all(root).context("removing the raw directory")?;
    Ok(elapsed)
}
