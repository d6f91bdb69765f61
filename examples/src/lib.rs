//! Example jobs (in progress).
