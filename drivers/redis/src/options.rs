//! [`RedisOptions`]: the server URL, the key prefix and the driver's knobs.

use std::time::Duration;

use queue_core::ConnectOptions;

/// The URL used when none is given: the `REDIS_URL` environment variable, else this.
pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// The key prefix used when none is given.
pub const DEFAULT_PREFIX: &str = "queue";

/// How to reach Redis and where to keep the queue's keys.
///
/// ```
/// use std::time::Duration;
/// use queue_redis::RedisOptions;
///
/// let options = RedisOptions::new("redis://:secret@cache.internal:6379/2")
///     .prefix("myapp")
///     .response_timeout(Duration::from_secs(10));
/// assert_eq!(options.get_prefix(), "myapp");
/// ```
#[derive(Clone)]
pub struct RedisOptions {
    pub(crate) url: String,
    pub(crate) prefix: String,
    pub(crate) failed_prefix: Option<String>,
    pub(crate) allow_eviction: bool,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Option<Duration>,
    pub(crate) name_scan_limit: usize,
}

// By hand, so that a password in the URL never reaches a log through `{:?}`.
impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("url", &queue_core::redact_url(&self.url))
            .field("prefix", &self.prefix)
            .field("failed_prefix", &self.failed_prefix)
            .field("allow_eviction", &self.allow_eviction)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("name_scan_limit", &self.name_scan_limit)
            .finish()
    }
}

impl RedisOptions {
    /// Options for the server at `url`: `redis://[[user]:password@]host[:port][/db]`,
    /// `redis+unix:///path/to/redis.sock[?db=N]`, or for a Redis Cluster
    /// `redis+cluster://[[user]:password@]host[:port][?nodes=host:port,host:port]` (see the
    /// [crate docs](crate#url)). The URL is checked when connecting.
    pub fn new(url: impl Into<String>) -> Self {
        RedisOptions {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            failed_prefix: None,
            allow_eviction: false,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Some(Duration::from_secs(30)),
            name_scan_limit: 5_000,
        }
    }

    /// Options for `$REDIS_URL`, or [`DEFAULT_URL`] when it is not set.
    pub fn from_env() -> Self {
        Self::new(std::env::var("REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned()))
    }

    /// Options for a URL chosen at run time (`runall --connection redis://...`):
    /// [`ConnectOptions::table`] is the key prefix, [`ConnectOptions::failed_table`] the
    /// failed store's prefix.
    pub fn from_connect(url: impl Into<String>, connect: &ConnectOptions) -> Self {
        let mut options = Self::new(url);
        if let Some(table) = &connect.table {
            options.prefix = table.clone();
        }
        options.failed_prefix = connect.failed_table.clone();
        options
    }

    /// The first part of every key (default `queue`), so several applications can share a
    /// server. Must not be empty and must not contain `{` or `}` (the driver puts hash tags
    /// around it).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The prefix of the failed store's keys (default: the same as [`prefix`](Self::prefix)).
    pub fn failed_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.failed_prefix = Some(prefix.into());
        self
    }

    /// Connect even though the server's `maxmemory-policy` lets it evict keys.
    ///
    /// Under any policy but `noeviction`, a Redis that runs out of memory silently deletes
    /// keys, which here means jobs, reservations and failed jobs vanish. By default
    /// connecting fails with a message saying how to fix the server
    /// (`CONFIG SET maxmemory-policy noeviction`); set this only if losing jobs is
    /// acceptable.
    pub fn allow_eviction(mut self, allow: bool) -> Self {
        self.allow_eviction = allow;
        self
    }

    /// How long one attempt to open a connection may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long to wait for a reply before the command fails and the connection is
    /// reopened (default 30 s). Blocking waits use a connection of their own and are not
    /// affected.
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = Some(timeout);
        self
    }

    /// Wait for replies for as long as it takes.
    pub fn no_response_timeout(mut self) -> Self {
        self.response_timeout = None;
        self
    }

    /// How many available jobs of each queue a reservation by name
    /// ([`ReserveRequest::name`](queue_core::ReserveRequest::name), `runall run NAME`)
    /// looks at, at most, per call (default 5,000). A job of that name queued behind more
    /// jobs of other names than this is found only once some of those are taken.
    pub fn name_scan_limit(mut self, limit: usize) -> Self {
        self.name_scan_limit = limit.max(1);
        self
    }

    /// The server URL.
    pub fn get_url(&self) -> &str {
        &self.url
    }

    /// The key prefix.
    pub fn get_prefix(&self) -> &str {
        &self.prefix
    }

    /// The failed store's key prefix.
    pub fn get_failed_prefix(&self) -> &str {
        self.failed_prefix.as_deref().unwrap_or(&self.prefix)
    }

    /// Whether connecting to a server that may evict keys is allowed.
    pub fn get_allow_eviction(&self) -> bool {
        self.allow_eviction
    }

    /// Checks the prefixes; the message says what is wrong.
    pub(crate) fn validate(&self) -> Result<(), String> {
        for (what, prefix) in [
            ("prefix", &self.prefix[..]),
            ("failed prefix", self.get_failed_prefix()),
        ] {
            if prefix.is_empty() {
                return Err(format!("the redis key {what} must not be empty"));
            }
            if prefix.contains(['{', '}']) {
                return Err(format!(
                    "the redis key {what} `{prefix}` must not contain `{{` or `}}` (the driver adds hash tags)"
                ));
            }
        }
        Ok(())
    }
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self::from_env()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_options_map_to_prefixes() {
        let mut connect = ConnectOptions::default();
        connect.table = Some("app".into());
        let options = RedisOptions::from_connect("redis://h", &connect);
        assert_eq!(options.get_prefix(), "app");
        assert_eq!(options.get_failed_prefix(), "app");
        connect.failed_table = Some("dead".into());
        let options = RedisOptions::from_connect("redis://h", &connect);
        assert_eq!(options.get_failed_prefix(), "dead");
    }

    #[test]
    fn prefixes_are_checked() {
        assert!(RedisOptions::new("redis://h").validate().is_ok());
        assert!(RedisOptions::new("redis://h")
            .prefix("")
            .validate()
            .is_err());
        assert!(RedisOptions::new("redis://h")
            .prefix("a{b")
            .validate()
            .is_err());
        assert!(RedisOptions::new("redis://h")
            .failed_prefix("}")
            .validate()
            .is_err());
    }
}
