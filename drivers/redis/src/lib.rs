//! The redis driver of queue-core (in progress).
