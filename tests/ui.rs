//! Compile-time errors of the DSL: every rule has a test whose `.stderr` shows the caret under
//! the offending token. Regenerate with `TRYBUILD=overwrite cargo test --test ui` and review
//! the diff.
#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/syntax/*.rs");
    t.compile_fail("tests/ui/vit/*.rs");
    t.compile_fail("tests/ui/dino/*.rs");
    t.compile_fail("tests/ui/crops/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
