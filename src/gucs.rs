//! Every `opsmeter.*` setting lives here: one doc-commented static per setting, one accessor
//! each, and [`init`] called from `_PG_init`.
//!
//! The `opsmeter.` prefix is reserved: once the library is loaded, `SET opsmeter.<typo>` is an
//! error instead of a silently ignored placeholder.

use crate::cores::{billing, jobs, queue};
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

/// `opsmeter.billing_included_quota_bytes`: included bytes per UTC month of an account without
/// a billing profile (text, so it can exceed an int4 setting's range).
static BILLING_INCLUDED_QUOTA: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"0"));

/// `opsmeter.billing_price_per_byte`: price of a billable byte for an account without a
/// profile, read as `numeric` (never a float).
static BILLING_PRICE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"0"));

/// `opsmeter.billing_multiplier`: price multiplier for an account without a profile (<= 0 means 1).
static BILLING_MULTIPLIER: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"1"));

/// `opsmeter.billing_first_sample`: what the first sample of a counter bills: `full` (its value;
/// the counter started at zero) or `baseline` (nothing; it only sets the checkpoint).
static BILLING_FIRST_SAMPLE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"full"));

/// `opsmeter.billing_reset_policy`: what a counter reset bills: `skip` (nothing, the seed) or
/// `from_zero` (the new value).
static BILLING_RESET_POLICY: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"skip"));

/// `opsmeter.billing_lookback`: how far back a source's first window starts.
static BILLING_LOOKBACK_S: GucSetting<i32> = GucSetting::<i32>::new(3600);

/// `opsmeter.billing_delay`: how far behind now() a window ends, so exporters have finished it.
static BILLING_DELAY_S: GucSetting<i32> = GucSetting::<i32>::new(60);

/// `opsmeter.database`: the database the background worker runs in (unset: no worker). Read at
/// server start; defined only when the library is preloaded.
static WORKER_DATABASE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

/// `opsmeter.rollup_interval`: how often the `rollup` job runs.
static ROLLUP_INTERVAL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"1 minute"));

/// `opsmeter.maintenance_interval`: how often the `partitions` and `retention` jobs run.
static MAINTENANCE_INTERVAL: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"1 hour"));

/// `opsmeter.daily_stats_at`: the UTC time of day after which yesterday's daily stats are written.
static DAILY_STATS_AT: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"00:05"));

/// `opsmeter.daily_stats_catch_up`: the most days one `daily_stats` run writes after downtime.
static DAILY_STATS_CATCH_UP: GucSetting<i32> = GucSetting::<i32>::new(7);

/// `opsmeter.partitions_ahead`: how many days of partitions exist ahead of today.
static PARTITIONS_AHEAD: GucSetting<i32> = GucSetting::<i32>::new(3);

/// `opsmeter.retention`: how long the raw log tables keep a day (0: keep everything).
static RETENTION: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"30 days"));

/// `opsmeter.job_runs_keep`: how many rows `opsmeter.job_runs` keeps.
static JOB_RUNS_KEEP: GucSetting<i32> = GucSetting::<i32>::new(10_000);

/// The text a string check hook is offered (None for a NULL value).
///
/// # Safety
/// `newval` must be the pointer PostgreSQL passes to a string GUC's check hook.
unsafe fn candidate(newval: *mut *mut core::ffi::c_char) -> Option<String> {
    // SAFETY: PostgreSQL passes a valid pointer to the candidate value (a C string or NULL).
    unsafe {
        let p = *newval;
        if p.is_null() {
            None
        } else {
            Some(CStr::from_ptr(p).to_string_lossy().into_owned())
        }
    }
}

/// Sets the detail of a rejected setting, as GUC_check_errdetail does.
fn reject(detail: &str) -> bool {
    let detail = CString::new(detail).unwrap_or_default();
    // SAFETY: pstrdup copies the string into the current memory context, as GUC_check_errdetail does.
    unsafe { pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(detail.as_ptr()) };
    false
}

macro_rules! text_check_hook {
    ($name:ident, $check:expr) => {
        #[pgrx::pg_guard]
        unsafe extern "C-unwind" fn $name(
            newval: *mut *mut core::ffi::c_char,
            _extra: *mut *mut core::ffi::c_void,
            _source: pg_sys::GucSource::Type,
        ) -> bool {
            // SAFETY: called by PostgreSQL as a string check hook.
            match unsafe { candidate(newval) } {
                None => reject("The value must not be NULL."),
                Some(text) => match ($check)(text.as_str()) {
                    Ok(_) => true,
                    Err(e) => reject(&format!("{e}.")),
                },
            }
        }
    };
}

text_check_hook!(check_billing_quota, billing::parse_quota_bytes);
text_check_hook!(check_billing_price, |s| billing::check_price(
    "opsmeter.billing_price_per_byte",
    s
));
text_check_hook!(check_billing_multiplier, |s| billing::check_multiplier(
    "opsmeter.billing_multiplier",
    s
));
text_check_hook!(check_billing_first_sample, billing::FirstSample::parse);
text_check_hook!(check_billing_reset_policy, billing::ResetPolicy::parse);
text_check_hook!(check_rollup_interval, |s| jobs::job_interval(
    "opsmeter.rollup_interval",
    s
));
text_check_hook!(check_maintenance_interval, |s| jobs::job_interval(
    "opsmeter.maintenance_interval",
    s
));
text_check_hook!(check_daily_stats_at, jobs::daily_at);
text_check_hook!(check_retention, jobs::retention);

type CheckHook = unsafe extern "C-unwind" fn(
    *mut *mut core::ffi::c_char,
    *mut *mut core::ffi::c_void,
    pg_sys::GucSource::Type,
) -> bool;

fn define_checked_text(
    name: &'static CStr,
    short: &'static CStr,
    long: &'static CStr,
    setting: &'static GucSetting<Option<CString>>,
    hook: CheckHook,
    context: GucContext,
) {
    // SAFETY: the check hooks are #[pg_guard]ed and only read their argument.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            name,
            short,
            long,
            setting,
            context,
            GucFlags::default(),
            Some(hook),
            None,
            None,
        );
    }
}

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
    define_checked_text(
        c"opsmeter.billing_included_quota_bytes",
        c"Included bytes per UTC month for an account without a billing profile.",
        c"An integer 0 .. 9223372036854775807 (default 0); consumed before any byte is billable.",
        &BILLING_INCLUDED_QUOTA,
        check_billing_quota,
        GucContext::Userset,
    );
    define_checked_text(
        c"opsmeter.billing_price_per_byte",
        c"Price of a billable byte for an account without a billing profile.",
        c"A decimal number >= 0, read as numeric (default '0').",
        &BILLING_PRICE,
        check_billing_price,
        GucContext::Userset,
    );
    define_checked_text(
        c"opsmeter.billing_multiplier",
        c"Price multiplier for an account without a billing profile.",
        c"A decimal number, read as numeric (default '1'); a multiplier <= 0 means 1.",
        &BILLING_MULTIPLIER,
        check_billing_multiplier,
        GucContext::Userset,
    );
    define_checked_text(
        c"opsmeter.billing_first_sample",
        c"What the first sample of a cumulative counter bills: full or baseline.",
        c"full (default): its whole value, the counter started at zero; baseline: nothing, it only sets the checkpoint.",
        &BILLING_FIRST_SAMPLE,
        check_billing_first_sample,
        GucContext::Userset,
    );
    define_checked_text(
        c"opsmeter.billing_reset_policy",
        c"What a counter reset (a value below the checkpoint's) bills: skip or from_zero.",
        c"skip (default, as the seed): nothing; from_zero: the new value, as Prometheus counts it. The checkpoint moves either way.",
        &BILLING_RESET_POLICY,
        check_billing_reset_policy,
        GucContext::Userset,
    );
    GucRegistry::define_int_guc(
        c"opsmeter.billing_lookback",
        c"How far back before now() a billing source's first window starts.",
        c"billing_window(source) starts at the source's last_completed_until, or now() minus this when it has none. 0 .. 366 days.",
        &BILLING_LOOKBACK_S,
        0,
        366 * 86_400,
        GucContext::Userset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"opsmeter.billing_delay",
        c"How far behind now() a billing window ends.",
        c"billing_window(source) ends at now() minus this, so exporters have finished the samples of the window. 0 .. 7 days.",
        &BILLING_DELAY_S,
        0,
        7 * 86_400,
        GucContext::Userset,
        GucFlags::UNIT_S,
    );
    define_job_settings();
    // SAFETY: called once from _PG_init in the postmaster or a backend; the string is static.
    unsafe { pg_sys::MarkGUCPrefixReserved(c"opsmeter".as_ptr()) };
}

/// The background worker's and the jobs' settings. Jobs run as superuser-only settings
/// (`SUSET`): set them in postgresql.conf or with ALTER SYSTEM and reload, so the worker sees
/// them too; a superuser may still SET them in a session for one `ops_run_job` call.
fn define_job_settings() {
    // SAFETY: reads a flag PostgreSQL sets while it loads shared_preload_libraries.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        // A PGC_POSTMASTER setting may only be defined while preloading.
        GucRegistry::define_string_guc(
            c"opsmeter.database",
            c"Database the opsmeter background worker runs its jobs in (unset: no worker).",
            c"Needs shared_preload_libraries = 'opsmeter' and a server restart. The worker waits for CREATE EXTENSION opsmeter there.",
            &WORKER_DATABASE,
            GucContext::Postmaster,
            GucFlags::SUPERUSER_ONLY,
        );
    }
    define_checked_text(
        c"opsmeter.rollup_interval",
        c"How often the rollup job (ops_rollup_catch_up) runs.",
        c"A fixed-length interval from 1 second to 1 day (default '1 minute').",
        &ROLLUP_INTERVAL,
        check_rollup_interval,
        GucContext::Suset,
    );
    define_checked_text(
        c"opsmeter.maintenance_interval",
        c"How often the partitions and retention jobs run.",
        c"A fixed-length interval from 1 second to 1 day (default '1 hour').",
        &MAINTENANCE_INTERVAL,
        check_maintenance_interval,
        GucContext::Suset,
    );
    define_checked_text(
        c"opsmeter.daily_stats_at",
        c"UTC time of day after which the daily_stats job writes yesterday.",
        c"HH:MM or HH:MM:SS, 00:00 .. 23:59:59 (default '00:05').",
        &DAILY_STATS_AT,
        check_daily_stats_at,
        GucContext::Suset,
    );
    GucRegistry::define_int_guc(
        c"opsmeter.daily_stats_catch_up",
        c"The most days one daily_stats run writes, oldest first, after downtime.",
        c"Days since the latest written day, up to yesterday; 1 .. 366 (default 7).",
        &DAILY_STATS_CATCH_UP,
        1,
        366,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"opsmeter.partitions_ahead",
        c"Days of day partitions the partitions job keeps ahead of today.",
        c"0 .. 366 (default 3); for usage_logs, error_logs, log_records and request_records.",
        &PARTITIONS_AHEAD,
        0,
        366,
        GucContext::Suset,
        GucFlags::default(),
    );
    define_checked_text(
        c"opsmeter.retention",
        c"How long the raw log tables keep a day; older day partitions are dropped.",
        c"0 keeps everything; otherwise an interval of at least 1 day (default '30 days'). Only opsmeter's own usage_logs, error_logs and log_records.",
        &RETENTION,
        check_retention,
        GucContext::Suset,
    );
    GucRegistry::define_int_guc(
        c"opsmeter.job_runs_keep",
        c"How many rows opsmeter.job_runs keeps (the newest).",
        c"Older rows are trimmed after each recorded run; 10 .. 100000000 (default 10000).",
        &JOB_RUNS_KEEP,
        10,
        100_000_000,
        GucContext::Suset,
        GucFlags::default(),
    );
}

/// `opsmeter.database`, when the library was preloaded and it is set.
pub fn worker_database() -> Option<String> {
    WORKER_DATABASE
        .get()
        .map(|c| c.to_string_lossy().into_owned())
        .filter(|s| !s.trim().is_empty())
}

/// The settings that decide when jobs are due (values were checked when they were set).
pub fn job_schedule() -> jobs::Schedule {
    let d = jobs::Schedule::default();
    jobs::Schedule {
        rollup_every_us: jobs::job_interval("opsmeter.rollup_interval", &text_of(&ROLLUP_INTERVAL))
            .unwrap_or(d.rollup_every_us),
        maintenance_every_us: jobs::job_interval(
            "opsmeter.maintenance_interval",
            &text_of(&MAINTENANCE_INTERVAL),
        )
        .unwrap_or(d.maintenance_every_us),
        daily_at_us: jobs::daily_at(&text_of(&DAILY_STATS_AT)).unwrap_or(d.daily_at_us),
    }
}

/// `opsmeter.daily_stats_catch_up`.
pub fn daily_stats_catch_up() -> i32 {
    DAILY_STATS_CATCH_UP.get()
}

/// `opsmeter.partitions_ahead`.
pub fn partitions_ahead() -> i32 {
    PARTITIONS_AHEAD.get()
}

/// `opsmeter.retention` in microseconds (0: keep everything).
pub fn retention_us() -> Result<i64, jobs::JobError> {
    jobs::retention(&text_of(&RETENTION))
}

/// `opsmeter.job_runs_keep`.
pub fn job_runs_keep() -> i64 {
    JOB_RUNS_KEEP.get() as i64
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

fn text_of(setting: &GucSetting<Option<CString>>) -> String {
    setting
        .get()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The billing settings in force: the counter rules and the pricing of accounts without a
/// profile (values were checked when they were set).
pub fn billing_settings() -> Result<(billing::Rules, billing::Pricing), billing::BillingError> {
    let rules = billing::Rules {
        first: billing::FirstSample::parse(&text_of(&BILLING_FIRST_SAMPLE))?,
        reset: billing::ResetPolicy::parse(&text_of(&BILLING_RESET_POLICY))?,
    };
    let price = text_of(&BILLING_PRICE);
    billing::check_price("opsmeter.billing_price_per_byte", &price)?;
    let multiplier = text_of(&BILLING_MULTIPLIER);
    billing::check_multiplier("opsmeter.billing_multiplier", &multiplier)?;
    let pricing = billing::Pricing {
        included_quota_bytes: billing::parse_quota_bytes(&text_of(&BILLING_INCLUDED_QUOTA))?,
        price_per_byte: price.trim().to_string(),
        multiplier: multiplier.trim().to_string(),
        pricing_rule_version: "default".into(),
    };
    Ok((rules, pricing))
}

/// `opsmeter.billing_lookback` and `opsmeter.billing_delay` in microseconds.
pub fn billing_window_us() -> (i64, i64) {
    (
        BILLING_LOOKBACK_S.get() as i64 * 1_000_000,
        BILLING_DELAY_S.get() as i64 * 1_000_000,
    )
}
