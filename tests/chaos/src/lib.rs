//! The chaos harness (in progress).
