//! The memcached driver of queue-core (in progress).
