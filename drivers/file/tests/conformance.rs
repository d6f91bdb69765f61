//! The conformance suite against the file driver, each case in a fresh 0700 directory.

mod common;

queue_tests::conformance!(common::store());
