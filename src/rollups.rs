//! Ops rollups (SPEC §2): hourly and daily metrics with true percentiles, next to the data.
//! Rules and SQL text live in [`crate::cores::rollup`]; this file resolves the sources, takes
//! the rollup lock and runs the statements through SPI.
//!
//! `ops_upsert_hourly` runs in two steps inside one transaction: a read-only aggregation (so
//! PostgreSQL may run it in parallel; a data-modifying statement never is) that returns the new
//! rows as one `opsmeter.metrics_hourly[]`, then the window's hours are deleted and those rows
//! inserted. Every writer holds one transaction-level advisory lock, so overlapping calls queue
//! rather than race, and each reads the data with a snapshot taken after it got the lock.

use crate::cores::rollup::{self as ru, Names, RollupError, Width, Window};
use crate::cores::sources::Role;
use crate::error::{OrRaise, SqlError};
use crate::gucs;
use crate::sources::resolve;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

impl SqlError for RollupError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE
    }
    fn hint(&self) -> Option<String> {
        RollupError::hint(self)
    }
}

extension_sql!(
    r#"
CREATE TABLE opsmeter.metrics_hourly (
    bucket_start                      timestamptz NOT NULL,
    platform                          text,
    group_id                          bigint,
    success_count                     bigint NOT NULL DEFAULT 0,
    error_count_total                 bigint NOT NULL DEFAULT 0,
    business_limited_count            bigint NOT NULL DEFAULT 0,
    error_count_sla                   bigint NOT NULL DEFAULT 0,
    upstream_error_count_excl_429_529 bigint NOT NULL DEFAULT 0,
    upstream_429_count                bigint NOT NULL DEFAULT 0,
    upstream_529_count                bigint NOT NULL DEFAULT 0,
    token_consumed                    bigint NOT NULL DEFAULT 0,
    duration_p50_ms                   integer,
    duration_p90_ms                   integer,
    duration_p95_ms                   integer,
    duration_p99_ms                   integer,
    duration_avg_ms                   double precision,
    duration_max_ms                   integer,
    ttft_p50_ms                       integer,
    ttft_p90_ms                       integer,
    ttft_p95_ms                       integer,
    ttft_p99_ms                       integer,
    ttft_avg_ms                       double precision,
    ttft_max_ms                       integer,
    duration_sketch                   ops_sketch,
    ttft_sketch                       ops_sketch,
    computed_at                       timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE UNIQUE INDEX metrics_hourly_key
    ON opsmeter.metrics_hourly (bucket_start, (COALESCE(platform, '')), (COALESCE(group_id, 0)));
COMMENT ON TABLE opsmeter.metrics_hourly IS 'opsmeter hourly ops metrics (UTC hours) at three grains: overall (platform and group_id NULL), platform, and (platform, group_id); written by ops_upsert_hourly()';
COMMENT ON INDEX opsmeter.metrics_hourly_key IS 'opsmeter: one row per hour and grain, as the seed''s COALESCE-based unique key';
SELECT pg_catalog.pg_extension_config_dump('opsmeter.metrics_hourly', '');

CREATE TABLE opsmeter.metrics_daily (
    bucket_date                       date NOT NULL,
    platform                          text,
    group_id                          bigint,
    success_count                     bigint NOT NULL DEFAULT 0,
    error_count_total                 bigint NOT NULL DEFAULT 0,
    business_limited_count            bigint NOT NULL DEFAULT 0,
    error_count_sla                   bigint NOT NULL DEFAULT 0,
    upstream_error_count_excl_429_529 bigint NOT NULL DEFAULT 0,
    upstream_429_count                bigint NOT NULL DEFAULT 0,
    upstream_529_count                bigint NOT NULL DEFAULT 0,
    token_consumed                    bigint NOT NULL DEFAULT 0,
    duration_p50_ms                   integer,
    duration_p90_ms                   integer,
    duration_p95_ms                   integer,
    duration_p99_ms                   integer,
    duration_avg_ms                   double precision,
    duration_max_ms                   integer,
    ttft_p50_ms                       integer,
    ttft_p90_ms                       integer,
    ttft_p95_ms                       integer,
    ttft_p99_ms                       integer,
    ttft_avg_ms                       double precision,
    ttft_max_ms                       integer,
    duration_sketch                   ops_sketch,
    ttft_sketch                       ops_sketch,
    computed_at                       timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE UNIQUE INDEX metrics_daily_key
    ON opsmeter.metrics_daily (bucket_date, (COALESCE(platform, '')), (COALESCE(group_id, 0)));
COMMENT ON TABLE opsmeter.metrics_daily IS 'opsmeter daily ops metrics (UTC dates) merged from the hourly sketches, so daily percentiles are as accurate as hourly ones; written by ops_upsert_daily()';
COMMENT ON INDEX opsmeter.metrics_daily_key IS 'opsmeter: one row per day and grain';
SELECT pg_catalog.pg_extension_config_dump('opsmeter.metrics_daily', '');

CREATE TYPE opsmeter.metrics_row AS (
    bucket_start                      timestamptz,
    platform                          text,
    group_id                          bigint,
    success_count                     bigint,
    error_count_total                 bigint,
    business_limited_count            bigint,
    error_count_sla                   bigint,
    upstream_error_count_excl_429_529 bigint,
    upstream_429_count                bigint,
    upstream_529_count                bigint,
    token_consumed                    bigint,
    duration_p50_ms                   integer,
    duration_p90_ms                   integer,
    duration_p95_ms                   integer,
    duration_p99_ms                   integer,
    duration_avg_ms                   double precision,
    duration_max_ms                   integer,
    ttft_p50_ms                       integer,
    ttft_p90_ms                       integer,
    ttft_p95_ms                       integer,
    ttft_p99_ms                       integer,
    ttft_avg_ms                       double precision,
    ttft_max_ms                       integer,
    duration_sketch                   ops_sketch,
    ttft_sketch                       ops_sketch
);
COMMENT ON TYPE opsmeter.metrics_row IS 'opsmeter: one bucket of ops_metrics() output';

-- PostgreSQL has no statistics for an expression such as the hour of created_at unless asked;
-- with these, ANALYZE tells the planner how many (hour, group) groups a window has, so the
-- rollup's aggregation is planned as a (parallel) hash aggregation of a few hundred groups.
CREATE STATISTICS opsmeter.usage_logs_hour_group (ndistinct)
    ON (pg_catalog.date_bin('1 hour'::interval, created_at, '2000-01-03 00:00:00+00'::timestamptz)), group_id
    FROM opsmeter.usage_logs;
COMMENT ON STATISTICS opsmeter.usage_logs_hour_group IS 'opsmeter: number of (UTC hour, group) groups, for the rollup''s plan';
CREATE STATISTICS opsmeter.error_logs_hour_group (ndistinct)
    ON (pg_catalog.date_bin('1 hour'::interval, created_at, '2000-01-03 00:00:00+00'::timestamptz)), platform, group_id
    FROM opsmeter.error_logs;
COMMENT ON STATISTICS opsmeter.error_logs_hour_group IS 'opsmeter: number of (UTC hour, platform, group) groups, for the rollup''s plan';
"#,
    name = "rollup_tables",
    requires = ["ops_sketch_type"]
);

/// The extension's schema, quoted, for the aggregate and accessor calls in generated SQL.
pub(crate) fn ext_schema() -> String {
    Spi::get_one::<String>(
        "SELECT pg_catalog.quote_ident(n.nspname) FROM pg_catalog.pg_extension e
           JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'opsmeter'",
    )
    .ok()
    .flatten()
    .unwrap_or_else(|| {
        pgrx::error!("opsmeter: extension opsmeter is not installed in this database")
    })
}

/// The sources the raw rollup reads, each checked against the columns it needs right now.
fn names() -> Names {
    let ext = ext_schema();
    let pair = Spi::get_one_with_args::<bool>(
        "SELECT pg_catalog.to_regprocedure($1 || '.ops_sketch_pair_a(float8, float8)') IS NOT NULL",
        &[ext.as_str().into()],
    )
    .ok()
    .flatten()
    .unwrap_or(false);
    Names {
        pair,
        ext,
        groups: resolve(Role::Groups),
        usage_logs: resolve(Role::UsageLogs),
        error_logs: resolve(Role::ErrorLogs),
    }
}

/// Takes the rollup lock, then makes sure the next statements read with a fresh snapshot: SPI
/// reuses the caller's (pre-lock) snapshot until the transaction has an xid.
fn lock_rollups() {
    let (k1, k2) = ru::LOCK_KEYS;
    Spi::run(&format!(
        "SELECT pg_catalog.pg_advisory_xact_lock({k1}, {k2}), pg_catalog.pg_current_xact_id()"
    ))
    .unwrap_or_else(|e| pgrx::error!("opsmeter: could not take the rollup lock: {e}"));
}

/// A `timestamptz` from microseconds since 2000-01-01 UTC, or an `ERROR` when out of range.
pub(crate) fn tstz(us: i64) -> TimestampWithTimeZone {
    TimestampWithTimeZone::try_from(us)
        .unwrap_or_else(|_| pgrx::error!("opsmeter: timestamp out of range"))
}

/// Microseconds since 2000-01-01 UTC of a `timestamptz`.
pub(crate) fn us(t: TimestampWithTimeZone) -> i64 {
    t.into()
}

/// Runs the rollup aggregation `f` with planner settings it needs, restoring the caller's
/// values afterwards (and at the end of the transaction on error, as `SET LOCAL` does):
/// * `enable_sort` off: PostgreSQL has no statistics for `date_bin('1 hour', created_at, ...)`
///   on a user's table (opsmeter's own tables have `CREATE STATISTICS` for it), so it estimates
///   as many (hour, group) groups as rows and plans a sort of the whole window followed by a
///   GroupAggregate; the real number of groups is hours x groups, which a hash table holds.
/// * `work_mem` at least `opsmeter.rollup_work_mem`, so that hash table does not spill.
pub(crate) fn with_hash_aggregation<T>(f: impl FnOnce() -> T) -> T {
    let (sort, work_mem_kb): (Option<String>, Option<i32>) = Spi::get_two(
        "SELECT pg_catalog.current_setting('enable_sort'),
                (SELECT setting::int FROM pg_catalog.pg_settings WHERE name = 'work_mem')",
    )
    .unwrap_or_else(|e| pgrx::error!("opsmeter: could not read settings: {e}"));
    let sort = sort.unwrap_or_else(|| "on".into());
    let work_mem_kb = work_mem_kb.unwrap_or(0);
    let want_kb = gucs::rollup_work_mem_kb().max(work_mem_kb);
    let set = |sort: &str, kb: i32| {
        Spi::run_with_args(
            "SELECT pg_catalog.set_config('enable_sort', $1, true), pg_catalog.set_config('work_mem', $2, true)",
            &[sort.into(), format!("{kb}kB").into()],
        )
        .unwrap_or_else(|e| pgrx::error!("opsmeter: could not set planner settings: {e}"));
    };
    set("off", want_kb);
    let out = f();
    set(&sort, work_mem_kb);
    out
}

/// Recomputes the (whole, aligned) hours of `w`; returns the rows written.
fn upsert_hourly_window(n: &Names, w: Window) -> i64 {
    let args = || [tstz(w.start).into(), tstz(w.end).into()];
    // Step one hands its `opsmeter.metrics_hourly[]` to step two as a datum: copied out of SPI's
    // memory into this call's (SPI_datumTransfer), no text round trip. No row limit either
    // (Spi::get_one asks for one row): PostgreSQL runs a plan without parallel workers when
    // the caller may stop early.
    let rows: Option<(pg_sys::Datum, pg_sys::Oid)> = with_hash_aggregation(|| {
        Spi::connect(|c| {
            let table = c.select(&ru::hourly_select_sql(n), None, &args())?.first();
            let oid = table.column_type_oid(1)?.value();
            Ok::<_, pgrx::spi::Error>(table.get_datum_by_ordinal(1)?.map(|d| {
                // SAFETY: a varlena array datum of this SPI result, copied into the upper
                // (function call) memory context while SPI is still connected.
                (unsafe { pg_sys::SPI_datumTransfer(d, false, -1) }, oid)
            }))
        })
        .unwrap_or_else(|e| pgrx::error!("opsmeter: hourly aggregation failed: {e}"))
    });
    Spi::run_with_args(ru::HOURLY_DELETE_SQL, &args())
        .unwrap_or_else(|e| pgrx::error!("opsmeter: could not clear the window's hours: {e}"));
    match rows {
        None => 0,
        Some((datum, oid)) => Spi::get_one_with_args::<i64>(
            &format!(
                "WITH ins AS ({} RETURNING 1) SELECT pg_catalog.count(*) FROM ins",
                ru::HOURLY_INSERT_SQL
            ),
            // SAFETY: `datum` is a live opsmeter.metrics_hourly[] of type `oid`.
            &[unsafe { pgrx::datum::DatumWithOid::new(datum, oid) }],
        )
        .unwrap_or_else(|e| pgrx::error!("opsmeter: could not write hourly rows: {e}"))
        .unwrap_or(0),
    }
}

/// Recomputes the (whole, aligned) UTC days of `w` from the hourly rows; returns rows written.
fn upsert_daily_window(ext: &str, w: Window) -> i64 {
    let args = || [tstz(w.start).into(), tstz(w.end).into()];
    Spi::run_with_args(ru::DAILY_DELETE_SQL, &args())
        .unwrap_or_else(|e| pgrx::error!("opsmeter: could not clear the window's days: {e}"));
    Spi::get_one_with_args::<i64>(
        &format!(
            "WITH ins AS ({}) SELECT pg_catalog.count(*) FROM ins",
            ru::daily_insert_sql(ext)
        ),
        &args(),
    )
    .unwrap_or_else(|e| pgrx::error!("opsmeter: could not write daily rows: {e}"))
    .unwrap_or(0)
}

/// Rolls up the usage and error logs of `[start_time, end_time)`, widened to whole UTC hours,
/// into `opsmeter.metrics_hourly`: every hour of the window is replaced exactly. NULL, empty or
/// inverted windows do nothing and return 0. Returns the number of rows written.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn ops_upsert_hourly(
    start_time: Option<TimestampWithTimeZone>,
    end_time: Option<TimestampWithTimeZone>,
) -> i64 {
    let Some(w) = ru::widen(start_time.map(us), end_time.map(us), ru::USECS_PER_HOUR).or_raise()
    else {
        return 0;
    };
    let n = names();
    lock_rollups();
    upsert_hourly_window(&n, w)
}

/// Rolls the hourly rows of `[start_time, end_time)`, widened to whole UTC days, up into
/// `opsmeter.metrics_daily` by merging sketches. Returns the number of rows written.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn ops_upsert_daily(
    start_time: Option<TimestampWithTimeZone>,
    end_time: Option<TimestampWithTimeZone>,
) -> i64 {
    let Some(w) = ru::widen(start_time.map(us), end_time.map(us), ru::USECS_PER_DAY).or_raise()
    else {
        return 0;
    };
    let ext = ext_schema();
    lock_rollups();
    upsert_daily_window(&ext, w)
}

/// Start of the latest hour in `opsmeter.metrics_hourly`, NULL when it is empty.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn ops_latest_hourly_bucket() -> Option<TimestampWithTimeZone> {
    Spi::get_one("SELECT pg_catalog.max(bucket_start) FROM opsmeter.metrics_hourly")
        .unwrap_or_else(|e| pgrx::error!("opsmeter: {e}"))
}

/// The latest date in `opsmeter.metrics_daily`, NULL when it is empty.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, pg_temp)]
fn ops_latest_daily_bucket() -> Option<pgrx::datum::Date> {
    Spi::get_one("SELECT pg_catalog.max(bucket_date) FROM opsmeter.metrics_daily")
        .unwrap_or_else(|e| pgrx::error!("opsmeter: {e}"))
}

/// Recomputes from the latest rolled-up hour up to `now() - opsmeter.rollup_lag` (from the
/// first logged request when nothing is rolled up yet), a day at a time, then the daily rows
/// from the latest rolled-up day up to the last complete UTC day. Returns rows written.
#[pg_extern(volatile)]
#[search_path(pg_catalog, pg_temp)]
fn ops_rollup_catch_up() -> i64 {
    let n = names();
    lock_rollups();
    let now: TimestampWithTimeZone = Spi::get_one("SELECT pg_catalog.now()")
        .ok()
        .flatten()
        .unwrap_or_else(|| pgrx::error!("opsmeter: now() is NULL"));
    let end = us(now) - gucs::rollup_lag_us();
    let first_hour: Option<TimestampWithTimeZone> = Spi::get_one(&format!(
        "SELECT COALESCE((SELECT pg_catalog.max(bucket_start) FROM opsmeter.metrics_hourly),
                         LEAST((SELECT pg_catalog.min(created_at) FROM {}),
                               (SELECT pg_catalog.min(created_at) FROM {})))",
        n.usage_logs, n.error_logs
    ))
    .unwrap_or_else(|e| pgrx::error!("opsmeter: {e}"));
    let mut written = 0;
    if let Some(w) = first_hour.and_then(|s| {
        ru::widen(Some(us(s)), Some(end), ru::USECS_PER_HOUR)
            .ok()
            .flatten()
    }) {
        for piece in ru::chunks(w, ru::USECS_PER_DAY) {
            written += upsert_hourly_window(&n, piece);
        }
    }
    let first_day: Option<TimestampWithTimeZone> = Spi::get_one(
        "SELECT COALESCE((SELECT pg_catalog.max(bucket_date)::timestamp AT TIME ZONE 'UTC' FROM opsmeter.metrics_daily),
                         (SELECT pg_catalog.min(bucket_start) FROM opsmeter.metrics_hourly))",
    )
    .unwrap_or_else(|e| pgrx::error!("opsmeter: {e}"));
    // only complete days: up to the UTC midnight at or before `end`
    let last_midnight = ru::floor_to(end, ru::USECS_PER_DAY, 0);
    if let Some(w) = first_day.and_then(|s| {
        ru::widen(Some(us(s)), Some(last_midnight), ru::USECS_PER_DAY)
            .ok()
            .flatten()
    }) {
        written += upsert_daily_window(&n.ext, w);
    }
    written
}

/// The query `ops_metrics` runs for a bucket width (with `$1` since, `$2` until, `$3` platform,
/// `$4` group_id): hourly rows, daily rows where whole days fit, or the raw logs for widths
/// that are not whole hours. Raises 22023 for a bucket that makes no sense.
#[pg_extern(stable, strict)]
#[search_path(pg_catalog, pg_temp)]
fn ops_metrics_query(
    since: TimestampWithTimeZone,
    until: TimestampWithTimeZone,
    bucket: Interval,
) -> String {
    ru::finite("since", us(since)).or_raise();
    ru::finite("until", us(until)).or_raise();
    let shown: String = Spi::get_one_with_args("SELECT $1::pg_catalog.text", &[bucket.into()])
        .ok()
        .flatten()
        .unwrap_or_default();
    let width = Width::parse(bucket.months(), bucket.days(), bucket.micros(), &shown).or_raise();
    let n = match width.plan() {
        ru::Plan::Raw => names(),
        _ => Names {
            pair: false,
            ext: ext_schema(),
            groups: String::new(),
            usage_logs: String::new(),
            error_logs: String::new(),
        },
    };
    ru::metrics_sql(&n, width)
}

extension_sql!(
    r#"
CREATE FUNCTION ops_metrics(
    since timestamptz, until timestamptz, bucket interval,
    platform text DEFAULT NULL, group_id bigint DEFAULT NULL
) RETURNS SETOF opsmeter.metrics_row
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    q text;
BEGIN
    IF bucket IS NULL THEN
        RAISE EXCEPTION 'bucket must not be NULL' USING ERRCODE = '22023',
            HINT = 'Examples: ''15 minutes'', ''1 hour'', ''1 day'', ''1 month''.';
    END IF;
    IF since IS NULL OR until IS NULL OR until <= since THEN
        RETURN;
    END IF;
    q := @extschema@.ops_metrics_query(since, until, bucket);
    -- hash aggregation for the raw-log path (see with_hash_aggregation in src/rollups.rs);
    -- reverted when the function returns, as it has its own SET clause
    PERFORM pg_catalog.set_config('enable_sort', 'off', true);
    RETURN QUERY EXECUTE q USING since, until, platform, group_id;
END
$fn$;
"#,
    name = "ops_metrics",
    requires = ["rollup_tables", ops_metrics_query]
);

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::cores::rollup as ru;
    use crate::pgrx_tests::sqlstate_of;
    use pgrx::prelude::*;

    fn columns_of(rel: &str) -> Vec<String> {
        Spi::get_one::<Vec<String>>(&format!(
            "SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute
              WHERE attrelid = '{rel}'::regclass AND attnum > 0 AND NOT attisdropped"
        ))
        .unwrap()
        .unwrap()
    }

    /// The generated SQL builds rows by position: the tables and the result type must keep the
    /// column order `cores::rollup::VALUE_COLUMNS` lists.
    #[pg_test]
    fn value_columns_follow_the_table_order() {
        let values: Vec<String> = ru::VALUE_COLUMNS.iter().map(|c| c.to_string()).collect();
        let hourly = columns_of("opsmeter.metrics_hourly");
        assert_eq!(hourly[..3], ["bucket_start", "platform", "group_id"]);
        assert_eq!(hourly[3..], values[..]);
        let daily = columns_of("opsmeter.metrics_daily");
        assert_eq!(daily[..3], ["bucket_date", "platform", "group_id"]);
        assert_eq!(daily[3..], values[..]);
        let row = columns_of("opsmeter.metrics_row");
        assert_eq!(row[3..], values[..values.len() - 1]); // no computed_at
    }

    fn seed_small_day() {
        Spi::run(
            "INSERT INTO opsmeter.groups (id, platform) VALUES (1, 'openai'), (2, 'gemini');
             INSERT INTO opsmeter.usage_logs (created_at, group_id, duration_ms, first_token_ms, input_tokens)
             SELECT '2026-11-21 00:00+00'::timestamptz + i * interval '37 seconds', 1 + i % 2, 100 + i % 500, NULLIF(i % 4, 0) * 10, 3
               FROM generate_series(0, 4000) i;
             INSERT INTO opsmeter.error_logs (created_at, platform, group_id, status_code, upstream_status_code, error_owner)
             SELECT '2026-11-21 00:00+00'::timestamptz + i * interval '7 minutes', 'openai', CASE WHEN i % 3 = 0 THEN NULL ELSE 1 END, 502, 529, 'provider'
               FROM generate_series(0, 100) i;",
        )
        .unwrap();
    }

    #[pg_test]
    fn hourly_rows_cover_three_grains_and_daily_merges_them() {
        seed_small_day();
        let written = Spi::get_one::<i64>(
            "SELECT ops_upsert_hourly('2026-11-21 00:00+00', '2026-11-22 00:00+00')",
        )
        .unwrap()
        .unwrap();
        // 4001 requests every 37 s span 41 hours: 24 hours of this day, each with overall,
        // two platforms and two groups
        assert_eq!(written, 24 * 5);
        let (ok, errs) = Spi::get_two::<i64, i64>(
            "SELECT sum(success_count)::bigint, sum(error_count_total)::bigint FROM opsmeter.metrics_hourly
              WHERE platform IS NULL",
        )
        .unwrap();
        let (exact_ok, exact_errs) = Spi::get_two::<i64, i64>(
            "SELECT (SELECT count(*) FROM opsmeter.usage_logs WHERE created_at < '2026-11-22 00:00+00'),
                    (SELECT count(*) FROM opsmeter.error_logs WHERE created_at < '2026-11-22 00:00+00')",
        )
        .unwrap();
        assert_eq!((ok, errs), (exact_ok, exact_errs));
        // errors without a group count for openai's platform row, not group 1's
        let (platform_errs, group_errs) = Spi::get_two::<i64, i64>(
            "SELECT sum(error_count_total) FILTER (WHERE group_id IS NULL)::bigint,
                    sum(error_count_total) FILTER (WHERE group_id = 1)::bigint
               FROM opsmeter.metrics_hourly WHERE platform = 'openai'",
        )
        .unwrap();
        assert!(platform_errs.unwrap() > group_errs.unwrap());
        assert_eq!(
            Spi::get_one::<i64>(
                "SELECT ops_upsert_daily('2026-11-21 12:00+00', '2026-11-21 13:00+00')"
            )
            .unwrap(),
            Some(5)
        );
        let same = Spi::get_one::<bool>(
            "SELECT d.duration_sketch::text = (SELECT ops_sketch_merge(duration_sketch)::text FROM opsmeter.metrics_hourly
                                                 WHERE platform IS NULL AND group_id IS NULL)
               FROM opsmeter.metrics_daily d WHERE d.platform IS NULL AND d.group_id IS NULL",
        )
        .unwrap();
        assert_eq!(same, Some(true));
    }

    #[pg_test]
    fn a_failing_call_changes_nothing() {
        seed_small_day();
        Spi::run("SELECT ops_upsert_hourly('2026-11-21 00:00+00', '2026-11-22 00:00+00')").unwrap();
        Spi::run(
            "CREATE TABLE my_errors AS SELECT * FROM opsmeter.error_logs;
             SELECT ops_set_source('error_logs', 'my_errors');
             ALTER TABLE my_errors DROP COLUMN error_owner;
             DELETE FROM opsmeter.usage_logs;",
        )
        .unwrap();
        assert_eq!(
            sqlstate_of("PERFORM ops_upsert_hourly('2026-11-21 00:00+00', '2026-11-22 00:00+00')"),
            "42703"
        );
        let rows = Spi::get_one::<i64>("SELECT count(*) FROM opsmeter.metrics_hourly").unwrap();
        assert_eq!(rows, Some(24 * 5));
    }

    #[pg_test]
    fn bucket_widths_are_checked() {
        for bad in [
            "0",
            "-1 hour",
            "1 mon 1 day",
            "59 seconds",
            "367 days",
            "121 months",
        ] {
            assert_eq!(
                sqlstate_of(&format!(
                    "PERFORM * FROM ops_metrics('2026-11-21', '2026-11-22', '{bad}')"
                )),
                "22023",
                "{bad}"
            );
        }
        for good in [
            "1 minute",
            "15 minutes",
            "1 hour",
            "1 day",
            "1 week",
            "1 month",
            "1 year",
        ] {
            assert_eq!(
                sqlstate_of(&format!(
                    "PERFORM * FROM ops_metrics('2026-11-21', '2026-11-22', '{good}')"
                )),
                "00000",
                "{good}"
            );
        }
    }

    #[pg_test]
    fn the_aggregation_hashes_with_enough_memory_and_gives_settings_back() {
        Spi::run("SET work_mem = '1MB'; SET enable_sort = on").unwrap();
        let inside = super::with_hash_aggregation(|| {
            Spi::get_two::<String, String>(
                "SELECT current_setting('work_mem'), current_setting('enable_sort')",
            )
            .unwrap()
        });
        assert_eq!(inside, (Some("64MB".into()), Some("off".into())));
        Spi::run("SET opsmeter.rollup_work_mem = '128MB'").unwrap();
        let inside = super::with_hash_aggregation(|| {
            Spi::get_one::<String>("SELECT current_setting('work_mem')").unwrap()
        });
        assert_eq!(inside, Some("128MB".into()));
        let after = Spi::get_two::<String, String>(
            "SELECT current_setting('work_mem'), current_setting('enable_sort')",
        )
        .unwrap();
        assert_eq!(after, (Some("1MB".into()), Some("on".into())));
    }

    /// The SQL month-bucket expression starts each bucket where `cores::rollup` says it does,
    /// before and after 2000 and across year ends, whatever the session TimeZone.
    #[pg_test]
    fn month_buckets_in_sql_follow_the_rule() {
        Spi::run("SET TimeZone = 'Asia/Kathmandu'").unwrap();
        for n in [1, 2, 3, 5, 7, 12] {
            let sql = format!(
                "SELECT array_agg(date_part('year', t AT TIME ZONE 'UTC')::int ORDER BY t),
                        array_agg(date_part('month', t AT TIME ZONE 'UTC')::int ORDER BY t),
                        array_agg(date_part('year', b AT TIME ZONE 'UTC')::int ORDER BY t),
                        array_agg(date_part('month', b AT TIME ZONE 'UTC')::int ORDER BY t),
                        bool_and(b = date_trunc('month', b, 'UTC'))
                   FROM (SELECT t, {} AS b
                           FROM generate_series(TIMESTAMPTZ '1998-11-30 23:00+00', '2027-02-01 00:00+00', interval '37 days 5 hours') t) x",
                ru::Width::Months(n).bucket_sql("t")
            );
            let (ty, tm, by, bm, starts_of_months) = Spi::connect(|c| {
                let r = c.select(&sql, None, &[])?.first();
                Ok::<_, pgrx::spi::Error>((
                    r.get::<Vec<i32>>(1)?.unwrap(),
                    r.get::<Vec<i32>>(2)?.unwrap(),
                    r.get::<Vec<i32>>(3)?.unwrap(),
                    r.get::<Vec<i32>>(4)?.unwrap(),
                    r.get::<bool>(5)?.unwrap(),
                ))
            })
            .unwrap();
            assert!(
                starts_of_months,
                "n={n}: a bucket that is not a month start"
            );
            for i in 0..ty.len() {
                let want = ru::month_bucket_index(ty[i], tm[i] as u32, n);
                let got = by[i] as i64 * 12 + (bm[i] as i64 - 1);
                assert_eq!(got, want, "n={n}: {}-{:02}", ty[i], tm[i]);
            }
        }
    }

    /// The rollup's SQL with the two sketches from one pair state (what 0.11.0's catalog gets)
    /// and with two ops_sketch calls (an older catalog under a newer library) give the same
    /// rows, byte for byte, and those sketches are ops_sketch's over the raw rows.
    #[pg_test]
    fn pair_and_separate_sketches_give_the_same_rows() {
        seed_small_day();
        let mut names = super::names();
        assert!(names.pair, "this catalog has ops_sketch_pair_a");
        let rows = |n: &ru::Names| {
            let sql = ru::hourly_select_sql(n)
                .replace("$1", "'2026-11-21 00:00+00'::timestamptz")
                .replace("$2", "'2026-11-22 00:00+00'::timestamptz");
            Spi::get_one::<Vec<String>>(&format!(
                "SELECT array_agg(r::text ORDER BY r::text) FROM pg_catalog.unnest(({sql})) r"
            ))
            .unwrap()
            .unwrap()
        };
        let paired = rows(&names);
        names.pair = false;
        let separate = rows(&names);
        assert_eq!(paired.len(), 24 * 5);
        assert_eq!(paired, separate);
        Spi::run("SELECT ops_upsert_hourly('2026-11-21 00:00+00', '2026-11-22 00:00+00')").unwrap();
        let (matched, same) = Spi::get_two::<i64, bool>(
            "SELECT count(*), bool_and(h.duration_sketch::text = r.d AND h.ttft_sketch::text IS NOT DISTINCT FROM r.t)
               FROM opsmeter.metrics_hourly h
               JOIN (SELECT date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS b, group_id,
                            ops_sketch(duration_ms)::text AS d, ops_sketch(first_token_ms)::text AS t
                       FROM opsmeter.usage_logs WHERE created_at < '2026-11-22 00:00+00' GROUP BY 1, 2) r
                 ON r.b = h.bucket_start AND r.group_id = h.group_id",
        )
        .unwrap();
        assert_eq!((matched, same), (Some(48), Some(true)));
    }

    /// The aggregation step is a plain SELECT, so PostgreSQL may plan it in parallel.
    #[pg_test]
    fn the_hourly_aggregation_can_run_in_parallel() {
        seed_small_day();
        let names = super::names();
        let sql = ru::hourly_select_sql(&names)
            .replace("$1", "'2026-11-21 00:00+00'::timestamptz")
            .replace("$2", "'2026-11-22 00:00+00'::timestamptz");
        Spi::run(
            "SET LOCAL parallel_setup_cost = 0; SET LOCAL parallel_tuple_cost = 0;
             SET LOCAL min_parallel_table_scan_size = 0; SET LOCAL max_parallel_workers_per_gather = 2",
        )
        .unwrap();
        let plan = Spi::get_one::<pgrx::Json>(&format!("EXPLAIN (FORMAT JSON) {sql}"))
            .unwrap()
            .unwrap();
        assert!(plan.0.to_string().contains("Gather"), "{}", plan.0);
    }
}
