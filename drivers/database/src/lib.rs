//! The database driver of queue-core (in progress).
