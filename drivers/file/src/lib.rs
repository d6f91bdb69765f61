//! The file driver of queue-core (in progress).
