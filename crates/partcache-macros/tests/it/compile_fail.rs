//! Misuse is a compile error that says what to do, pointing at the offending code.
//! Regenerate the expected output with `TRYBUILD=overwrite cargo test -p partcache-macros
//! --test it compile_fail`, then review the `.stderr` diffs.

#[test]
fn misuse_is_a_compile_error() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/fail/*.rs");
    cases.pass("tests/ui/pass/*.rs");
}
