//! Compile errors of `#[derive(Job)]`: each file under `tests/ui/` is one mistake, with the
//! expected message in its `.stderr`. Regenerate with
//! `TRYBUILD=overwrite cargo test -p queue-derive --test ui` and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
