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
mod jobs;
mod partitions;
mod queue;
mod records;
mod rollups;
mod schema;
mod sketch;
mod sources;
mod subxact;
mod types;
mod version;
mod worker;

::pgrx::pg_module_magic!(name, version);

/// Library load hook: registers settings, and with `shared_preload_libraries` the background
/// worker. Works with and without preloading.
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::init();
    // SAFETY: reads a flag PostgreSQL sets while it loads shared_preload_libraries.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        worker::register();
    }
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
