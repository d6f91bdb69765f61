//! The driver's own errors, turned into [`queue_core::Error`] at the boundary.

use crate::DRIVER;

/// What can go wrong in the redis driver besides Redis itself failing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisDriverError {
    /// Redis failed: a lost connection, a timeout, an error reply.
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    /// A script answered something the driver does not understand (a different version of
    /// the driver's scripts, or keys written by something else).
    #[error("unexpected reply from redis to {operation}: {reply}")]
    UnexpectedReply {
        /// What the driver was doing.
        operation: &'static str,
        /// The reply, abridged.
        reply: String,
    },
    /// A settle or an apply with dependency changes found, this many times in a row, that a
    /// job waiting under one of their keys was replaced between the driver's read of it and
    /// the script (which must be given the keys of the jobs it may release): nothing was
    /// changed, and the call can be made again.
    #[error("the jobs waiting under the keys of a settle's dependency changes were replaced under it {attempts} times in a row; nothing was changed")]
    WaitingChanged {
        /// How many times the driver read them and called the script.
        attempts: usize,
    },

    /// A cancel with effects found the job changed between its look and its removal (a
    /// worker reserved it, or its lease ran out) this many times in a row: nothing was
    /// changed, and the cancel can be asked again.
    #[error("job {id} changed under a cancel {tries} times in a row; nothing was changed")]
    Moved {
        /// The job's id.
        id: String,
        /// How many times it was looked at.
        tries: usize,
    },
}

impl RedisDriverError {
    pub(crate) fn unexpected(operation: &'static str, reply: &redis::Value) -> Self {
        let mut reply = format!("{reply:?}");
        if reply.len() > 200 {
            let mut end = 200;
            while !reply.is_char_boundary(end) {
                end -= 1;
            }
            reply.truncate(end);
            reply.push_str("...");
        }
        RedisDriverError::UnexpectedReply { operation, reply }
    }
}

impl From<RedisDriverError> for queue_core::Error {
    fn from(error: RedisDriverError) -> Self {
        queue_core::Error::backend(DRIVER, error)
    }
}

/// Wraps a Redis error as the core's backend error.
pub(crate) fn backend(error: redis::RedisError) -> queue_core::Error {
    RedisDriverError::Redis(error).into()
}
