//! The driver's own errors, converted to [`queue_core::Error::Backend`] at the boundary.

use std::time::Duration;

/// What can go wrong talking to memcached.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MemcachedError {
    /// The TCP connection failed or broke.
    #[error("connection to {addr} failed: {source}")]
    Io {
        /// The server's address.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The server did not answer in time.
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout {
        /// The server's address.
        addr: String,
        /// The configured I/O timeout.
        timeout: Duration,
    },
    /// The server answered something this driver does not understand.
    #[error("unexpected answer from memcached: {0}")]
    Protocol(String),
    /// The server refused a command (`SERVER_ERROR`, `CLIENT_ERROR`, `ERROR`).
    #[error("memcached refused a command: {0}")]
    Refused(String),
    /// The URL or an option is wrong.
    #[error("bad memcached URL or option: {0}")]
    Config(String),
    /// An operation kept losing compare-and-swap races.
    #[error("gave up on `{0}` after too many concurrent modifications")]
    Contention(String),
}

impl From<MemcachedError> for queue_core::Error {
    fn from(e: MemcachedError) -> Self {
        match e {
            MemcachedError::Config(message) => queue_core::Error::Config(message),
            other => queue_core::Error::backend(crate::DRIVER, other),
        }
    }
}
