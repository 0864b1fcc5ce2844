//! Every `opsmeter.*` setting lives here: one doc-commented static per setting, one accessor
//! each, and [`init`] called from `_PG_init`.
//!
//! The `opsmeter.` prefix is reserved: once the library is loaded, `SET opsmeter.<typo>` is an
//! error instead of a silently ignored placeholder.

use crate::cores::queue;
use pgrx::{pg_sys, GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::{CStr, CString};

/// `opsmeter.rollup_lag`: how far behind `now()` `ops_rollup_catch_up()` stops, so rows that
/// arrive late (a request logged when it finishes) are still in the hour when it is computed.
static ROLLUP_LAG_S: GucSetting<i32> = GucSetting::<i32>::new(300);

/// `opsmeter.rollup_work_mem`: the least `work_mem` the rollup's aggregation runs with (kB).
/// It holds two sketch states of up to ~17 KiB per (hour, group); below its size PostgreSQL
/// spills the hash table to disk, which is correct but about 1.5x slower.
static ROLLUP_WORK_MEM_KB: GucSetting<i32> = GucSetting::<i32>::new(64 * 1024);

/// `opsmeter.retry_base`: the first retry delay of a failed operation; retry n waits
/// `retry_base · 2^n`. A fixed-length interval, checked when it is set.
static RETRY_BASE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"1 minute"));

/// `opsmeter.max_retries`: retries of a failed operation before it is a dead letter.
static MAX_RETRIES: GucSetting<i32> = GucSetting::<i32>::new(5);

/// `opsmeter.retry_jitter`: each retry delay is shortened by a random share of up to this much
/// of itself (0: exact schedule), so many operations failed at once do not retry at once.
static RETRY_JITTER: GucSetting<f64> = GucSetting::<f64>::new(0.0);

/// `opsmeter.queue_lowmark_written` (internal, transaction-local): the oldest timestamp, as
/// epoch seconds, this transaction has written to `opsmeter.queue_lowmarks`.
static QUEUE_LOWMARK_WRITTEN: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(None);

/// Rejects an `opsmeter.retry_base` that is not a positive fixed-length interval, at `SET` or
/// config reload time, with PostgreSQL's usual "invalid value for parameter" error.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn check_retry_base(
    newval: *mut *mut core::ffi::c_char,
    _extra: *mut *mut core::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: PostgreSQL passes a valid pointer to the candidate value (a C string or NULL).
    let text = unsafe {
        let p = *newval;
        if p.is_null() {
            return false;
        }
        CStr::from_ptr(p).to_string_lossy().into_owned()
    };
    match queue::retry_base(&text) {
        Ok(_) => true,
        Err(_) => {
            // SAFETY: the detail string is palloc'd in the current context, as GUC_check_errdetail does.
            unsafe {
                pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(
                    c"opsmeter.retry_base must be a positive fixed-length interval such as '1 minute', '30s' or '500 milliseconds'."
                        .as_ptr(),
                );
            }
            false
        }
    }
}

/// Registers opsmeter's settings and reserves the `opsmeter` prefix.
pub fn init() {
    // SAFETY: the check hook is #[pg_guard]ed and only reads its argument.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"opsmeter.retry_base",
            c"First retry delay of a failed queue operation; retry n waits retry_base * 2^n.",
            c"A positive fixed-length interval, e.g. '1 minute' (the default), '30s', '500 milliseconds'.",
            &RETRY_BASE,
            GucContext::Userset,
            GucFlags::default(),
            Some(check_retry_base),
            None,
            None,
        );
    }
    GucRegistry::define_string_guc(
        c"opsmeter.queue_lowmark_written",
        c"Internal: the oldest operation timestamp this transaction recorded for queue claims.",
        c"Set transaction-locally by opsmeter's queue triggers; not meant to be set by hand.",
        &QUEUE_LOWMARK_WRITTEN,
        GucContext::Userset,
        GucFlags::NO_SHOW_ALL,
    );
    GucRegistry::define_int_guc(
        c"opsmeter.max_retries",
        c"Retries of a failed queue operation before it becomes a dead letter.",
        c"The (max_retries + 1)-th failure of an operation makes it DEAD_LETTER. 0 .. 1000.",
        &MAX_RETRIES,
        0,
        1000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_float_guc(
        c"opsmeter.retry_jitter",
        c"Share of a retry delay that is randomly taken off it (0 .. 1).",
        c"0 keeps the exact schedule; j spreads each retry uniformly over [delay * (1 - j), delay].",
        &RETRY_JITTER,
        0.0,
        1.0,
        GucContext::Userset,
        GucFlags::default(),
    );
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

/// The retry settings in force.
pub fn retry_policy() -> Result<queue::RetryPolicy, queue::QueueError> {
    let text = RETRY_BASE
        .get()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default();
    let base_us = queue::retry_base(&text)?;
    Ok(queue::RetryPolicy {
        base_us,
        max_retries: MAX_RETRIES.get(),
        jitter: RETRY_JITTER.get(),
    })
}
