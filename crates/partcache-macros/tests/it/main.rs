//! The integration tests of partcache-macros in one test binary: the behaviour suite
//! (`suite`) on the local store (`local`; on Redis it runs in `integration-tests`), the
//! process-wide default manager, and the compile errors of misuse (`compile_fail`,
//! trybuild cases in `tests/ui`).
//!
//! `cargo test -p partcache-macros --test it local::` runs one module.

#[macro_use]
mod suite;

mod compile_fail;
mod default_manager;
mod local;
