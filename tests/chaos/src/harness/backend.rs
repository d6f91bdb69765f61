//! Restarting the backend under running workers (scenario 6), and always bringing it back.
//!
//! | backend | down | up |
//! |---|---|---|
//! | PostgreSQL | `pg_ctlcluster --skip-systemctl-redirect VERSION main stop` | `... start` |
//! | MariaDB / MySQL | `mysqladmin -uroot -hHOST -PPORT shutdown` | `start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd` |
//! | Redis | `redis-cli -h HOST -p PORT shutdown nosave` | `redis-server --daemonize yes --bind HOST --port PORT` with the persistence settings it had |
//! | memcached | `kill -TERM` of the process listening on the port | the same command line again |
//!
//! The [`Outage`] guard starts the backend again when dropped, whatever happened meanwhile
//! (a failed check, an error, Ctrl-C), and waits until its port answers.

use std::net::{TcpStream, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// A backend the harness knows how to restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Backend {
    Postgres { host: String, port: u16 },
    Mariadb { host: String, port: u16 },
    Redis { host: String, port: u16 },
    Memcached { host: String, port: u16 },
}

/// Host and port of a `scheme://[user[:pw]@]host[:port][/...]` URL.
fn host_port(url: &str, default_port: u16) -> Option<(String, u16)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => (h.to_owned(), p.parse().ok()?),
        _ => (hostport.to_owned(), default_port),
    };
    let host = if host.is_empty() {
        "127.0.0.1".to_owned()
    } else {
        host
    };
    Some((host, port))
}

impl Backend {
    /// The backend a URL names, if it is one the harness can restart.
    pub(crate) fn for_url(url: &str) -> Option<Backend> {
        let scheme = url.split_once(':')?.0;
        match scheme {
            "postgres" | "postgresql" => {
                let (host, port) = host_port(url, 5432)?;
                Some(Backend::Postgres { host, port })
            }
            "mysql" | "mariadb" => {
                let (host, port) = host_port(url, 3306)?;
                Some(Backend::Mariadb { host, port })
            }
            "redis" => {
                let (host, port) = host_port(url, 6379)?;
                Some(Backend::Redis { host, port })
            }
            "memcache" | "memcached" => {
                let (host, port) = host_port(url, 11211)?;
                Some(Backend::Memcached { host, port })
            }
            _ => None,
        }
    }

    fn address(&self) -> (&str, u16) {
        match self {
            Backend::Postgres { host, port }
            | Backend::Mariadb { host, port }
            | Backend::Redis { host, port }
            | Backend::Memcached { host, port } => (host, *port),
        }
    }

    /// True if the port accepts a connection.
    pub(crate) fn answers(&self) -> bool {
        let (host, port) = self.address();
        let Ok(mut addrs) = (host, port).to_socket_addrs() else {
            return false;
        };
        addrs.any(|a| TcpStream::connect_timeout(&a, Duration::from_millis(300)).is_ok())
    }

    fn wait(&self, up: bool, limit: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if self.answers() == up {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (host, port) = self.address();
        bail!(
            "{host}:{port} still {} after {limit:?}",
            if up { "does not answer" } else { "answers" }
        )
    }

    /// Takes the backend down and returns the guard that brings it back.
    pub(crate) fn take_down(&self) -> anyhow::Result<Outage> {
        let (host, port) = self.address();
        let mut outage = Outage {
            backend: self.clone(),
            start: Vec::new(),
            up: false,
        };
        match self {
            Backend::Postgres { .. } => {
                if let Some((stop, start)) = private_postgres(port) {
                    outage.start = vec![start];
                    run(&stop)?;
                } else {
                    let version = postgres_version()?;
                    let cmd = |action: &str| {
                        vec![
                            "pg_ctlcluster".to_owned(),
                            "--skip-systemctl-redirect".to_owned(),
                            version.clone(),
                            "main".to_owned(),
                            action.to_owned(),
                        ]
                    };
                    outage.start = vec![cmd("start")];
                    run(&cmd("stop"))?;
                }
            }
            Backend::Mariadb { .. } => {
                // A server started with its own command line (a private instance,
                // scripts/private-servers.sh) is started again with it; the system's with
                // its service's defaults.
                let argv = listener_pid(port)
                    .and_then(process_argv)
                    .filter(|argv| argv.len() > 1);
                outage.start = vec![match argv {
                    Some(argv) => detached(argv),
                    None => vec![
                        "start-stop-daemon".into(),
                        "--start".into(),
                        "--oknodo".into(),
                        "--background".into(),
                        "--exec".into(),
                        "/usr/sbin/mariadbd".into(),
                    ],
                }];
                run(&[
                    "mysqladmin".into(),
                    "-uroot".into(),
                    format!("-h{host}"),
                    format!("-P{port}"),
                    "shutdown".into(),
                ])?;
            }
            Backend::Redis { .. } => {
                let get = |key: &str| redis_config(host, port, key);
                let mut start = vec![
                    "redis-server".to_owned(),
                    "--daemonize".to_owned(),
                    "yes".to_owned(),
                    "--bind".to_owned(),
                    host.to_owned(),
                    "--port".to_owned(),
                    port.to_string(),
                ];
                // The same persistence as before, so a durable configuration stays durable.
                for key in [
                    "save",
                    "appendonly",
                    "appendfsync",
                    "dir",
                    "dbfilename",
                    "appendfilename",
                    "maxmemory-policy",
                ] {
                    if let Some(value) = get(key) {
                        start.push(format!("--{key}"));
                        start.push(value);
                    }
                }
                outage.start = vec![start];
                run(&[
                    "redis-cli".into(),
                    "-h".into(),
                    host.to_owned(),
                    "-p".into(),
                    port.to_string(),
                    "shutdown".into(),
                    "nosave".into(),
                ])
                .or_else(|e| {
                    // `shutdown` closes the connection before redis-cli reads a reply, which
                    // some versions report as an error: only the port tells.
                    if self.wait(false, Duration::from_secs(5)).is_ok() {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })?;
            }
            Backend::Memcached { .. } => {
                let pid = listener_pid(port)
                    .with_context(|| format!("no process found listening on port {port}"))?;
                let mut argv = process_argv(pid).unwrap_or_default();
                if argv.is_empty() {
                    argv = vec![
                        "memcached".into(),
                        "-d".into(),
                        "-u".into(),
                        "root".into(),
                        "-l".into(),
                        host.to_owned(),
                        "-p".into(),
                        port.to_string(),
                    ];
                }
                outage.start = vec![argv];
                run(&["kill".into(), "-TERM".into(), pid.to_string()])?;
            }
        }
        self.wait(false, Duration::from_secs(30))?;
        Ok(outage)
    }
}

/// The backend while it is down: [`Outage::bring_up`] starts it; dropping the guard does too.
#[derive(Debug)]
pub(crate) struct Outage {
    backend: Backend,
    start: Vec<Vec<String>>,
    up: bool,
}

impl Outage {
    /// Starts the backend and waits (up to 60 s) until its port answers.
    pub(crate) fn bring_up(&mut self) -> anyhow::Result<()> {
        if self.up {
            return Ok(());
        }
        for argv in &self.start {
            // A server that does not daemonize itself stays our child: detached, not waited.
            let memcached = argv[0].ends_with("memcached");
            let daemonizes = argv.iter().any(|a| a == "-d" || a == "--daemon");
            if argv[0] == "setsid" {
                // `setsid -f` returns at once; the server it forks must not hold our pipes.
                let status = Command::new(&argv[0])
                    .args(&argv[1..])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .with_context(|| format!("cannot run {}", argv.join(" ")))?;
                if !status.success() {
                    bail!("`{}` failed ({status})", argv.join(" "));
                }
            } else if !memcached || daemonizes {
                run(argv)?;
            } else {
                Command::new(&argv[0])
                    .args(&argv[1..])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .with_context(|| format!("cannot start {}", argv.join(" ")))?;
            }
        }
        self.backend.wait(true, Duration::from_secs(60))?;
        self.up = true;
        Ok(())
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        if !self.up {
            if let Err(e) = self.bring_up() {
                eprintln!(
                    "chaos: COULD NOT BRING {:?} BACK: {e:#}; start it by hand: {}",
                    self.backend,
                    self.start
                        .iter()
                        .map(|a| a.join(" "))
                        .collect::<Vec<_>>()
                        .join(" && ")
                );
            }
        }
    }
}

fn run(argv: &[String]) -> anyhow::Result<()> {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", argv.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `argv` run in a session of its own, detached from the harness.
fn detached(argv: Vec<String>) -> Vec<String> {
    let mut out = vec!["setsid".to_owned(), "-f".to_owned()];
    out.extend(argv);
    out
}

/// The stop and start commands of a PostgreSQL server on `port` that is not a packaged
/// cluster (its data directory is not under `/var/lib/postgresql`): a private instance
/// (scripts/private-servers.sh), stopped and started with `pg_ctl` as its owner, with the
/// options it runs with. `None` for a packaged cluster (`pg_ctlcluster` restarts those).
fn private_postgres(port: u16) -> Option<(Vec<String>, Vec<String>)> {
    let argv = process_argv(listener_pid(port)?)?;
    let at = argv.iter().position(|a| a == "-D")?;
    let data = argv.get(at + 1)?.clone();
    if data.starts_with("/var/lib/postgresql") {
        return None;
    }
    let bin = std::path::Path::new(&argv[0]).parent()?;
    let pg_ctl = bin.join("pg_ctl").to_string_lossy().into_owned();
    let options: Vec<String> = argv[1..]
        .iter()
        .enumerate()
        .filter(|(i, _)| *i + 1 != at && *i + 1 != at + 1)
        .map(|(_, a)| a.clone())
        .collect();
    let as_owner = |args: Vec<String>| {
        let mut cmd = vec![
            "runuser".to_owned(),
            "-u".to_owned(),
            "postgres".to_owned(),
            "--".to_owned(),
            pg_ctl.clone(),
            "-D".to_owned(),
            data.clone(),
        ];
        cmd.extend(args);
        cmd
    };
    let stop = as_owner(vec!["-m".into(), "fast".into(), "-w".into(), "stop".into()]);
    let start = as_owner(vec![
        "-l".into(),
        format!("{data}/server.log"),
        "-w".into(),
        "-o".into(),
        options.join(" "),
        "start".into(),
    ]);
    Some((stop, start))
}

fn postgres_version() -> anyhow::Result<String> {
    let mut versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
        .context("no /etc/postgresql: cannot restart PostgreSQL with pg_ctlcluster")?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    versions.sort();
    versions.pop().context("no cluster under /etc/postgresql")
}

fn redis_config(host: &str, port: u16, key: &str) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", host, "-p", &port.to_string(), "config", "get", key])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let _name = lines.next()?;
    lines.next().map(str::to_owned)
}

/// The pid of the process listening on TCP `port` (from /proc).
fn listener_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 10 || cols[3] != "0A" {
                continue;
            }
            let local_port = cols[1]
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) {
                inodes.push(format!("socket:[{}]", cols[9]));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.filter_map(|e| e.ok()) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.filter_map(|e| e.ok()) {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| target.as_os_str() == i.as_str()) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

fn process_argv(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (!argv.is_empty()).then_some(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            Backend::for_url("postgres://postgres@127.0.0.1:5432/test"),
            Some(Backend::Postgres {
                host: "127.0.0.1".into(),
                port: 5432
            })
        );
        assert_eq!(
            Backend::for_url("mysql://root@127.0.0.1/test"),
            Some(Backend::Mariadb {
                host: "127.0.0.1".into(),
                port: 3306
            })
        );
        assert_eq!(
            Backend::for_url("redis://:pw@10.0.0.1:6390/2"),
            Some(Backend::Redis {
                host: "10.0.0.1".into(),
                port: 6390
            })
        );
        assert_eq!(
            Backend::for_url("memcache://127.0.0.1:11211?prefix=x"),
            Some(Backend::Memcached {
                host: "127.0.0.1".into(),
                port: 11211
            })
        );
        assert_eq!(Backend::for_url("sqlite://jobs.db"), None);
        assert_eq!(Backend::for_url("file:///tmp/q"), None);
    }
}
