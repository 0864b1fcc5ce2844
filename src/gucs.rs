//! Every `opsmeter.*` setting lives here: one doc-commented static per setting, one accessor
//! each, and [`init`] called from `_PG_init`.
//!
//! The `opsmeter.` prefix is reserved: once the library is loaded, `SET opsmeter.<typo>` is an
//! error instead of a silently ignored placeholder.

use pgrx::{pg_sys, GucContext, GucFlags, GucRegistry, GucSetting};

/// `opsmeter.rollup_lag`: how far behind `now()` `ops_rollup_catch_up()` stops, so rows that
/// arrive late (a request logged when it finishes) are still in the hour when it is computed.
static ROLLUP_LAG_S: GucSetting<i32> = GucSetting::<i32>::new(300);

/// `opsmeter.rollup_work_mem`: the least `work_mem` the rollup's aggregation runs with (kB).
/// It holds two sketch states of up to ~17 KiB per (hour, group); below its size PostgreSQL
/// spills the hash table to disk, which is correct but about 1.5x slower.
static ROLLUP_WORK_MEM_KB: GucSetting<i32> = GucSetting::<i32>::new(64 * 1024);

/// Registers opsmeter's settings and reserves the `opsmeter` prefix.
pub fn init() {
    GucRegistry::define_int_guc(
        c"opsmeter.rollup_work_mem",
        c"The least work_mem the rollup aggregation runs with.",
        c"Raised for that one statement only when the session's work_mem is lower; 0 keeps the session's work_mem.",
        &ROLLUP_WORK_MEM_KB,
        0,
        2 * 1024 * 1024,
        GucContext::Userset,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_int_guc(
        c"opsmeter.rollup_lag",
        c"How far behind now() ops_rollup_catch_up() rolls up to.",
        c"The latest rolled-up hour is recomputed on every catch-up, so late rows within this lag are never missed. 0 .. 7 days.",
        &ROLLUP_LAG_S,
        0,
        7 * 86_400,
        GucContext::Userset,
        GucFlags::UNIT_S,
    );
    // SAFETY: called once from _PG_init in the postmaster or a backend; the string is static.
    unsafe { pg_sys::MarkGUCPrefixReserved(c"opsmeter".as_ptr()) };
}

/// `opsmeter.rollup_lag` in microseconds.
pub fn rollup_lag_us() -> i64 {
    ROLLUP_LAG_S.get() as i64 * 1_000_000
}

/// `opsmeter.rollup_work_mem` in kB (0: keep the session's `work_mem`).
pub fn rollup_work_mem_kb() -> i32 {
    ROLLUP_WORK_MEM_KB.get()
}
