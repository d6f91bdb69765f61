//! [`MemcachedOptions`]: where the server is, the key prefixes, and the driver's knobs.

use std::time::Duration;

use crate::error::MemcachedError;

/// The default port of memcached.
pub const DEFAULT_PORT: u16 = 11211;

/// How to reach memcached and how the driver behaves.
///
/// Built from a URL with [`MemcachedOptions::from_url`] or by hand with
/// [`MemcachedOptions::new`] and the builder methods.
///
/// ```
/// use std::time::Duration;
/// use queue_memcached::MemcachedOptions;
///
/// let options = MemcachedOptions::from_url("memcache://127.0.0.1:11211?prefix=app&pool=8")?;
/// assert_eq!(options.addr(), "127.0.0.1:11211");
/// assert_eq!(options.prefix_name(), "app");
/// assert_eq!(options.failed_prefix_name(), "app_failed");
///
/// let options = MemcachedOptions::new("10.0.0.5:11211").prefix("jobs").io_timeout(Duration::from_secs(2));
/// assert_eq!(options.prefix_name(), "jobs");
/// # Ok::<(), queue_memcached::MemcachedError>(())
/// ```
#[derive(Debug, Clone)]
pub struct MemcachedOptions {
    addr: String,
    prefix: String,
    failed_prefix: Option<String>,
    pub(crate) pool_size: usize,
    pub(crate) io_timeout: Duration,
    pub(crate) missing_slot_wait: Duration,
    pub(crate) idle_poll: Duration,
    /// Whether the URL named the prefix (it then wins over `ConnectOptions::table`), and the
    /// failed prefix.
    pub(crate) url_prefix: bool,
    pub(crate) url_failed_prefix: bool,
}

impl MemcachedOptions {
    /// Options for the server at `addr` (`host:port`), with the defaults: prefix `queue`,
    /// failed prefix `{prefix}_failed`, 16 connections, 5 s I/O timeout, 1 s wait for a
    /// claimed slot whose item is not written yet.
    pub fn new(addr: impl Into<String>) -> Self {
        MemcachedOptions {
            addr: addr.into(),
            prefix: "queue".into(),
            failed_prefix: None,
            pool_size: 16,
            io_timeout: Duration::from_secs(5),
            missing_slot_wait: Duration::from_secs(1),
            idle_poll: Duration::from_millis(20),
            url_prefix: false,
            url_failed_prefix: false,
        }
    }

    /// Parses `memcache://host[:port][?option=value&...]` (the scheme `memcached://` works
    /// too). Options: `prefix`, `failed_prefix`, `pool` (connections), `timeout` (I/O),
    /// `missing_slot_wait`, `idle_poll` (durations as `250ms`, `5s`).
    pub fn from_url(url: &str) -> Result<Self, MemcachedError> {
        // Never quote a password back: errors end up in logs.
        let shown = queue_core::redact_url(url);
        let bad = |why: String| MemcachedError::Config(format!("{why} in `{shown}`"));
        let rest = url
            .strip_prefix("memcache://")
            .or_else(|| url.strip_prefix("memcached://"))
            .ok_or_else(|| bad("the URL must start with memcache:// or memcached://".into()))?;
        let (authority, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let authority = authority.trim_end_matches('/');
        if authority.contains('/') {
            return Err(bad(
                "a path is not supported; use ?prefix=NAME for the key prefix".into(),
            ));
        }
        if authority.contains('@') {
            return Err(bad(
                "credentials are not supported (memcached's text protocol has none)".into(),
            ));
        }
        let host = if authority.is_empty() {
            "127.0.0.1"
        } else {
            authority
        };
        // `[::1]:11211`, `[::1]`, `host:port`, `host`.
        let has_port = match host.rfind(']') {
            Some(close) => host[close..].contains(':'),
            None => host.contains(':'),
        };
        let addr = if has_port {
            host.to_owned()
        } else {
            format!("{host}:{DEFAULT_PORT}")
        };
        let mut options = MemcachedOptions::new(addr);
        for pair in query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let duration = || {
                queue_core::parse_duration(value).map_err(|e| bad(format!("option `{key}`: {e}")))
            };
            match key {
                "prefix" => {
                    options.prefix = value.to_owned();
                    options.url_prefix = true;
                }
                "failed_prefix" => {
                    options.failed_prefix = Some(value.to_owned());
                    options.url_failed_prefix = true;
                }
                "pool" => {
                    options.pool_size = value
                        .parse()
                        .map_err(|_| bad(format!("option `pool` wants a number, not `{value}`")))?
                }
                "timeout" => options.io_timeout = duration()?,
                "missing_slot_wait" => options.missing_slot_wait = duration()?,
                "idle_poll" => options.idle_poll = duration()?,
                other => return Err(bad(format!("unknown option `{other}`"))),
            }
        }
        options.validate()?;
        Ok(options)
    }

    /// Checks the values; called by `from_url` and when connecting.
    pub(crate) fn validate(&self) -> Result<(), MemcachedError> {
        if self.prefix.is_empty() {
            return Err(MemcachedError::Config("the key prefix is empty".into()));
        }
        if self.failed_prefix.as_deref() == Some("") {
            return Err(MemcachedError::Config(
                "the failed-jobs prefix is empty".into(),
            ));
        }
        if self.pool_size == 0 {
            return Err(MemcachedError::Config(
                "the pool needs at least one connection".into(),
            ));
        }
        if self.io_timeout.is_zero() {
            return Err(MemcachedError::Config("the I/O timeout is zero".into()));
        }
        Ok(())
    }

    /// The key prefix of everything but the failed store (`ConnectOptions::table`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The key prefix of the failed store (`ConnectOptions::failed_table`); by default
    /// `{prefix}_failed`.
    pub fn failed_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.failed_prefix = Some(prefix.into());
        self
    }

    /// At most this many connections (and so concurrent round trips) at once.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size;
        self
    }

    /// How long one round trip (or connecting) may take before it fails.
    pub fn io_timeout(mut self, timeout: Duration) -> Self {
        self.io_timeout = timeout;
        self
    }

    /// How long `reserve` waits for a claimed slot whose item a pusher has not written yet
    /// before it skips the slot (a pusher that writes later is told and uses a new slot).
    pub fn missing_slot_wait(mut self, wait: Duration) -> Self {
        self.missing_slot_wait = wait;
        self
    }

    /// The longest an idle worker goes between two looks for jobs (20 ms by default; never
    /// longer than the worker's `--sleep`). memcached cannot tell a waiting worker about a
    /// push, so a waiting worker looks: a pipelined read of each queue's ends, 2 ms after it
    /// began to wait, then twice as long each time up to this. Larger values cost less while
    /// idle and make the first job after a quiet spell start later.
    pub fn idle_poll(mut self, every: Duration) -> Self {
        self.idle_poll = every;
        self
    }

    /// The server's `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The key prefix in use.
    pub fn prefix_name(&self) -> &str {
        &self.prefix
    }

    /// The failed store's key prefix in use.
    pub fn failed_prefix_name(&self) -> String {
        self.failed_prefix
            .clone()
            .unwrap_or_else(|| format!("{}_failed", self.prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let o = MemcachedOptions::from_url("memcache://localhost").unwrap();
        assert_eq!(o.addr(), "localhost:11211");
        let o = MemcachedOptions::from_url("memcached://[::1]:1234/?timeout=2s").unwrap();
        assert_eq!(o.addr(), "[::1]:1234");
        assert_eq!(o.io_timeout, Duration::from_secs(2));
        let o = MemcachedOptions::from_url("memcache://h:1?failed_prefix=f").unwrap();
        assert_eq!(o.failed_prefix_name(), "f");
        assert_eq!(o.idle_poll, Duration::from_millis(20));
        let o = MemcachedOptions::from_url("memcache://h?idle_poll=250ms").unwrap();
        assert_eq!(o.idle_poll, Duration::from_millis(250));
        assert!(MemcachedOptions::from_url("memcache://h?idle_poll=soon").is_err());
        assert!(MemcachedOptions::from_url("redis://h").is_err());
        assert!(MemcachedOptions::from_url("memcache://h/x").is_err());
        assert!(MemcachedOptions::from_url("memcache://h?nope=1").is_err());
        assert!(MemcachedOptions::from_url("memcache://h?pool=0").is_err());
        assert!(MemcachedOptions::from_url("memcache://h?prefix=").is_err());
    }
}
