//! opsmeter: gateway operations metrics inside PostgreSQL.
//!
//! `cores` holds the algorithms as plain Rust; every other module is thin pgrx glue for one
//! capability, plus `error` (SQLSTATE mapping), `gucs` (settings) and `schema` (tables).

use pgrx::prelude::*;

pub mod cores;

mod billing;
mod comments;
mod daily_stats;
mod error;
mod gucs;
mod queue;
mod records;
mod rollups;
mod schema;
mod sketch;
mod sources;
mod types;
mod version;

::pgrx::pg_module_magic!(name, version);

/// Library load hook: registers settings. Works with and without `shared_preload_libraries`.
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
}

/// Cross-cutting `#[pg_test]`s (catalog hygiene, upgrade checks) live in `pgrx-tests/`.
#[cfg(any(test, feature = "pg_test"))]
#[path = "../pgrx-tests/mod.rs"]
mod pgrx_tests;

/// This module is required by `cargo pgrx test` invocations.
/// It must be visible at the root of your extension crate.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
