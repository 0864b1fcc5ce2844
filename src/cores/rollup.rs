//! Ops rollups (SPEC §2): the rules behind `ops_upsert_hourly`, `ops_upsert_daily` and
//! `ops_metrics`, as plain Rust.
//!
//! * Windows: a call's `[start, end)` widens to whole UTC hours (or days) so a half-hour window
//!   never overwrites an hour with half its data; NULL, empty and inverted windows are no-ops.
//! * Bucket widths for `ops_metrics`: a fixed width (days are 24 h, buckets are in UTC) or a
//!   whole number of months, never both; which stored rows can answer it.
//! * The SQL text the glue runs. The heavy part is one aggregation per log table at the finest
//!   grain, (bucket, group_id), with the `ops_sketch` aggregate, so PostgreSQL can run it in
//!   parallel and Citus can push it to the shards; the platform and overall grains are derived
//!   from those small states by merging sketches (exact) and summing counts.
//!
//! Timestamps here are PostgreSQL `timestamptz` values: microseconds since 2000-01-01 00:00 UTC,
//! with `i64::MIN` / `i64::MAX` meaning `-infinity` / `infinity`.

use thiserror::Error;

pub const USECS_PER_MINUTE: i64 = 60_000_000;
pub const USECS_PER_HOUR: i64 = 3_600_000_000;
pub const USECS_PER_DAY: i64 = 86_400_000_000;
/// Buckets are aligned to Monday 2000-01-03 00:00 UTC (as timescaledb's `time_bucket`), so
/// every width that divides a day starts at UTC midnight and weeks start on Monday.
pub const BUCKET_ORIGIN_SQL: &str = "TIMESTAMPTZ '2000-01-03 00:00:00+00'";
/// The largest fixed bucket width `ops_metrics` accepts.
pub const MAX_FIXED_WIDTH: i64 = 366 * USECS_PER_DAY;
/// The largest month count `ops_metrics` accepts.
pub const MAX_MONTHS: i32 = 120;

/// The transaction-level advisory lock every rollup writer takes (`pg_advisory_xact_lock(k1, k2)`):
/// overlapping calls queue instead of racing; no call can deadlock another.
pub const LOCK_KEYS: (i32, i32) = (0x6f70_736d, 1); // "opsm", rollups

const TIMESTAMP_NOBEGIN: i64 = i64::MIN;
const TIMESTAMP_NOEND: i64 = i64::MAX;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RollupError {
    #[error("{arg} must be a finite timestamp, not {value}")]
    InfiniteBound {
        arg: &'static str,
        value: &'static str,
    },
    #[error("bucket must be a positive interval, got {0}")]
    WidthNotPositive(String),
    #[error("bucket must be either a fixed width (days, hours, minutes, seconds) or a whole number of months, not both: got {0}")]
    WidthMixed(String),
    #[error("bucket must be between 1 minute and 366 days, or 1 to 120 months: got {0}")]
    WidthOutOfRange(String),
}

impl RollupError {
    pub fn hint(&self) -> Option<String> {
        match self {
            RollupError::InfiniteBound { .. } => Some(
                "Pass a finite window, or call ops_rollup_catch_up() to roll up everything not yet rolled up."
                    .into(),
            ),
            _ => Some(
                "Examples: '15 minutes', '1 hour', '6 hours', '1 day', '7 days', '1 month'.".into(),
            ),
        }
    }
}

/// A half-open time range `[start, end)` in `timestamptz` microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

/// Largest multiple of `unit` (counted from `origin`) at or below `t`.
pub fn floor_to(t: i64, unit: i64, origin: i64) -> i64 {
    let off = (t as i128 - origin as i128).rem_euclid(unit as i128);
    (t as i128 - off) as i64
}

/// Smallest multiple of `unit` (counted from `origin`) at or above `t`.
pub fn ceil_to(t: i64, unit: i64, origin: i64) -> i64 {
    let f = floor_to(t, unit, origin);
    if f == t {
        t
    } else {
        f.saturating_add(unit)
    }
}

/// `t`, or an error naming `arg` when it is `-infinity` or `infinity`.
pub fn finite(arg: &'static str, t: i64) -> Result<i64, RollupError> {
    match t {
        TIMESTAMP_NOBEGIN => Err(RollupError::InfiniteBound {
            arg,
            value: "-infinity",
        }),
        TIMESTAMP_NOEND => Err(RollupError::InfiniteBound {
            arg,
            value: "infinity",
        }),
        _ => Ok(t),
    }
}

/// The window a rollup call covers: `None` (nothing to do, return 0) for a NULL bound or an
/// empty or inverted window, as in the seed; otherwise `[start, end)` widened to whole `unit`s
/// (UTC hours or days: both divide the distance from the PostgreSQL epoch to the origin).
pub fn widen(
    start: Option<i64>,
    end: Option<i64>,
    unit: i64,
) -> Result<Option<Window>, RollupError> {
    let (Some(start), Some(end)) = (start, end) else {
        return Ok(None);
    };
    let start = finite("start_time", start)?;
    let end = finite("end_time", end)?;
    if end <= start {
        return Ok(None);
    }
    Ok(Some(Window {
        start: floor_to(start, unit, 0),
        end: ceil_to(end, unit, 0),
    }))
}

/// Splits a window into consecutive pieces of at most `max_len` (aligned windows stay aligned
/// when `max_len` is a multiple of their unit).
pub fn chunks(w: Window, max_len: i64) -> Vec<Window> {
    let mut out = Vec::new();
    let mut s = w.start;
    while s < w.end {
        let e = s.saturating_add(max_len).min(w.end);
        out.push(Window { start: s, end: e });
        s = e;
    }
    out
}

/// A bucket width for `ops_metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    /// Microseconds (an interval's days count as 24 hours: buckets are in UTC).
    Fixed(i64),
    Months(i32),
}

/// Where `ops_metrics` reads a bucket width from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Widths that are whole hours but not whole days: stored hourly rows.
    Hourly,
    /// Whole days or months: stored daily rows for the days they cover, hourly rows after.
    DailyThenHourly,
    /// Widths that do not fit whole hours (e.g. 15 minutes): the raw log tables.
    Raw,
}

impl Width {
    /// Classifies an interval given as PostgreSQL stores it (months, days, microseconds).
    pub fn parse(months: i32, days: i32, micros: i64, shown: &str) -> Result<Width, RollupError> {
        if months != 0 {
            if days != 0 || micros != 0 {
                return Err(RollupError::WidthMixed(shown.into()));
            }
            if months < 0 {
                return Err(RollupError::WidthNotPositive(shown.into()));
            }
            if months > MAX_MONTHS {
                return Err(RollupError::WidthOutOfRange(shown.into()));
            }
            return Ok(Width::Months(months));
        }
        let total = days as i128 * USECS_PER_DAY as i128 + micros as i128;
        if total <= 0 {
            return Err(RollupError::WidthNotPositive(shown.into()));
        }
        if total < USECS_PER_MINUTE as i128 || total > MAX_FIXED_WIDTH as i128 {
            return Err(RollupError::WidthOutOfRange(shown.into()));
        }
        Ok(Width::Fixed(total as i64))
    }

    pub fn plan(self) -> Plan {
        match self {
            Width::Months(_) => Plan::DailyThenHourly,
            Width::Fixed(w) if w % USECS_PER_DAY == 0 => Plan::DailyThenHourly,
            Width::Fixed(w) if w % USECS_PER_HOUR == 0 => Plan::Hourly,
            Width::Fixed(_) => Plan::Raw,
        }
    }

    /// SQL for the start of the bucket holding the `timestamptz` expression `ts`.
    pub fn bucket_sql(self, ts: &str) -> String {
        match self {
            Width::Fixed(w) => format!(
                "pg_catalog.date_bin({}, {ts}, {BUCKET_ORIGIN_SQL})",
                interval_literal(w)
            ),
            Width::Months(1) => {
                format!("pg_catalog.date_trunc('month', {ts}, 'UTC')")
            }
            Width::Months(n) => format!(
                "(pg_catalog.date_trunc('month', {ts}, 'UTC') - pg_catalog.make_interval(months => \
                 (((pg_catalog.date_part('year', {ts} AT TIME ZONE 'UTC')::int * 12 \
                 + pg_catalog.date_part('month', {ts} AT TIME ZONE 'UTC')::int - 1) % {n}) + {n}) % {n}))"
            ),
        }
    }

    /// SQL for one bucket width as an interval literal.
    pub fn interval_sql(self) -> String {
        match self {
            Width::Fixed(w) => interval_literal(w),
            Width::Months(n) => format!("INTERVAL '{n} months'"),
        }
    }
}

fn interval_literal(micros: i64) -> String {
    format!("INTERVAL '{micros} microseconds'")
}

/// Month buckets of `n` months start at month indices divisible by `n`, counting January of
/// year 0 as index 0 (so 1, 2, 3, 4, 6 and 12 months start in January). The `#[pg_test]`
/// `month_buckets_in_sql_follow_the_rule` checks [`Width::bucket_sql`] against it.
pub fn month_bucket_index(year: i32, month: u32, n: i32) -> i64 {
    let idx = year as i64 * 12 + (month as i64 - 1);
    idx - idx.rem_euclid(n as i64)
}

/// Fully qualified, already quoted names the rollup SQL reads.
#[derive(Debug, Clone)]
pub struct Names {
    /// Schema of the extension's functions and types (quoted).
    pub ext: String,
    pub groups: String,
    pub usage_logs: String,
    pub error_logs: String,
    /// Whether the catalog has `ops_sketch_pair_a/_b` (0.11.0 on): the two sketches of a usage
    /// row are then computed in one shared state. False between installing a newer library and
    /// `ALTER EXTENSION opsmeter UPDATE` from an older catalog: two `ops_sketch` calls, the same
    /// bytes.
    pub pair: bool,
}

/// The count columns every rollup row carries, in table order.
pub const COUNT_COLUMNS: &[&str] = &[
    "success_count",
    "error_count_total",
    "business_limited_count",
    "error_count_sla",
    "upstream_error_count_excl_429_529",
    "upstream_429_count",
    "upstream_529_count",
    "token_consumed",
];

/// Every column of `opsmeter.metrics_hourly` after the key (`bucket_start`, `platform`,
/// `group_id`), in table order. `metrics_daily` has the same with `bucket_date` as its key.
pub const VALUE_COLUMNS: &[&str] = &[
    "success_count",
    "error_count_total",
    "business_limited_count",
    "error_count_sla",
    "upstream_error_count_excl_429_529",
    "upstream_429_count",
    "upstream_529_count",
    "token_consumed",
    "duration_p50_ms",
    "duration_p90_ms",
    "duration_p95_ms",
    "duration_p99_ms",
    "duration_avg_ms",
    "duration_max_ms",
    "ttft_p50_ms",
    "ttft_p90_ms",
    "ttft_p95_ms",
    "ttft_p99_ms",
    "ttft_avg_ms",
    "ttft_max_ms",
    "duration_sketch",
    "ttft_sketch",
    "computed_at",
];

/// The finest-grain aggregation over the raw logs in `[lo, hi)` (SQL expressions), bucketed by
/// `bucket`, then the three grains, as rows of (bucket_start, platform, group_id, the eight
/// counts, duration_sketch, ttft_sketch). The seed's rules:
/// * usage rows count only when their group exists (inner join; the join runs on the
///   aggregated rows, not the raw ones); their platform is the group's;
/// * error rows carry their own platform and group_id; counts use the seed's filters;
/// * overall rows count everything; platform rows need a non-empty platform; group rows also
///   need a group_id (errors without a group count in the overall and platform rows only).
pub fn grains_sql(n: &Names, bucket: Width, lo: &str, hi: &str) -> String {
    let ext = &n.ext;
    let ub = bucket.bucket_sql("u.created_at");
    let eb = bucket.bucket_sql("e.created_at");
    let (dur, ttft) = if n.pair {
        (
            format!("{ext}.ops_sketch_pair_a(u.duration_ms::float8, u.first_token_ms::float8)"),
            format!("{ext}.ops_sketch_pair_b(u.duration_ms::float8, u.first_token_ms::float8)"),
        )
    } else {
        (
            format!("{ext}.ops_sketch(u.duration_ms::float8)"),
            format!("{ext}.ops_sketch(u.first_token_ms::float8)"),
        )
    };
    format!(
        "WITH u AS (
    SELECT {ub} AS bucket_start, u.group_id,
           pg_catalog.count(*) AS success_count,
           pg_catalog.sum(u.input_tokens + u.output_tokens + u.cache_creation_tokens + u.cache_read_tokens) AS token_consumed,
           {dur} AS duration_sketch,
           {ttft} AS ttft_sketch
      FROM {usage} u
     WHERE u.created_at >= {lo} AND u.created_at < {hi} AND u.group_id IS NOT NULL
     GROUP BY 1, 2
), e AS (
    SELECT {eb} AS bucket_start, NULLIF(e.platform, '') AS platform, e.group_id,
           pg_catalog.count(*) FILTER (WHERE COALESCE(e.status_code, 0) >= 400) AS error_count_total,
           pg_catalog.count(*) FILTER (WHERE COALESCE(e.status_code, 0) >= 400 AND e.is_business_limited) AS business_limited_count,
           pg_catalog.count(*) FILTER (WHERE COALESCE(e.status_code, 0) >= 400 AND NOT e.is_business_limited) AS error_count_sla,
           pg_catalog.count(*) FILTER (WHERE e.error_owner = 'provider' AND NOT e.is_business_limited
                                         AND COALESCE(e.upstream_status_code, e.status_code, 0) NOT IN (429, 529)) AS upstream_error_count_excl_429_529,
           pg_catalog.count(*) FILTER (WHERE e.error_owner = 'provider' AND NOT e.is_business_limited
                                         AND COALESCE(e.upstream_status_code, e.status_code, 0) = 429) AS upstream_429_count,
           pg_catalog.count(*) FILTER (WHERE e.error_owner = 'provider' AND NOT e.is_business_limited
                                         AND COALESCE(e.upstream_status_code, e.status_code, 0) = 529) AS upstream_529_count
      FROM {errors} e
     WHERE e.created_at >= {lo} AND e.created_at < {hi}
     GROUP BY 1, 2, 3
), fine AS (
    SELECT u.bucket_start, NULLIF(g.platform, '') AS platform, u.group_id::bigint AS group_id,
           u.success_count, 0::bigint AS error_count_total, 0::bigint AS business_limited_count,
           0::bigint AS error_count_sla, 0::bigint AS upstream_error_count_excl_429_529,
           0::bigint AS upstream_429_count, 0::bigint AS upstream_529_count,
           u.token_consumed, u.duration_sketch, u.ttft_sketch
      FROM u JOIN {groups} g ON g.id = u.group_id
    UNION ALL
    SELECT e.bucket_start, e.platform::text, e.group_id::bigint,
           0::bigint, e.error_count_total, e.business_limited_count, e.error_count_sla,
           e.upstream_error_count_excl_429_529, e.upstream_429_count, e.upstream_529_count,
           NULL::numeric, NULL::{ext}.ops_sketch, NULL::{ext}.ops_sketch
      FROM e
)
SELECT bucket_start, platform, group_id,
       pg_catalog.sum(success_count)::bigint AS success_count,
       pg_catalog.sum(error_count_total)::bigint AS error_count_total,
       pg_catalog.sum(business_limited_count)::bigint AS business_limited_count,
       pg_catalog.sum(error_count_sla)::bigint AS error_count_sla,
       pg_catalog.sum(upstream_error_count_excl_429_529)::bigint AS upstream_error_count_excl_429_529,
       pg_catalog.sum(upstream_429_count)::bigint AS upstream_429_count,
       pg_catalog.sum(upstream_529_count)::bigint AS upstream_529_count,
       COALESCE(pg_catalog.sum(token_consumed), 0)::bigint AS token_consumed,
       {ext}.ops_sketch_merge(duration_sketch) AS duration_sketch,
       {ext}.ops_sketch_merge(ttft_sketch) AS ttft_sketch
  FROM fine
 GROUP BY GROUPING SETS ((bucket_start), (bucket_start, platform), (bucket_start, platform, group_id))
HAVING GROUPING(platform) = 1 OR (platform IS NOT NULL AND (GROUPING(group_id) = 1 OR group_id IS NOT NULL))",
        usage = n.usage_logs,
        errors = n.error_logs,
        groups = n.groups,
    )
}

/// The value columns of a rollup row from a subquery `src` that has the eight counts and the
/// two sketches: percentiles (rounded to whole ms, as the seed stores them), exact mean and max,
/// as `expr AS name` for a select list.
pub fn value_columns_sql(ext: &str, src: &str) -> String {
    value_column_exprs(ext, src)
        .iter()
        .map(|(e, n)| format!("{e} AS {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The same expressions without names, for a `ROW(...)` constructor.
pub fn value_row_sql(ext: &str, src: &str) -> String {
    value_column_exprs(ext, src)
        .into_iter()
        .map(|(e, _)| e)
        .collect::<Vec<_>>()
        .join(", ")
}

fn value_column_exprs(ext: &str, src: &str) -> Vec<(String, String)> {
    let mut cols: Vec<(String, String)> = COUNT_COLUMNS
        .iter()
        .map(|c| (format!("{src}.{c}"), c.to_string()))
        .collect();
    for (prefix, sk) in [("duration", "duration_sketch"), ("ttft", "ttft_sketch")] {
        for (name, q) in [
            ("p50", "0.5"),
            ("p90", "0.9"),
            ("p95", "0.95"),
            ("p99", "0.99"),
        ] {
            cols.push((
                format!("{ext}.ops_quantile({src}.{sk}, {q})::int4"),
                format!("{prefix}_{name}_ms"),
            ));
        }
        cols.push((
            format!("{ext}.ops_mean({src}.{sk})"),
            format!("{prefix}_avg_ms"),
        ));
        cols.push((
            format!("{ext}.ops_max({src}.{sk})::int4"),
            format!("{prefix}_max_ms"),
        ));
    }
    for sk in ["duration_sketch", "ttft_sketch"] {
        cols.push((format!("{src}.{sk}"), sk.to_string()));
    }
    cols
}

/// Step one of `ops_upsert_hourly`: a read-only query (so it may run in parallel) that returns
/// the window's new hourly rows as one `opsmeter.metrics_hourly[]`, NULL if none.
pub fn hourly_select_sql(n: &Names) -> String {
    format!(
        "SELECT pg_catalog.array_agg(ROW(r.bucket_start, r.platform, r.group_id, {vals}, pg_catalog.now())::opsmeter.metrics_hourly
                                 ORDER BY r.bucket_start, r.platform NULLS FIRST, r.group_id NULLS FIRST)
  FROM ({grains}) r",
        vals = value_row_sql(&n.ext, "r"),
        grains = grains_sql(n, Width::Fixed(USECS_PER_HOUR), "$1", "$2"),
    )
}

/// Step two of `ops_upsert_hourly`: the hours of the window are replaced exactly.
pub const HOURLY_DELETE_SQL: &str =
    "DELETE FROM opsmeter.metrics_hourly WHERE bucket_start >= $1 AND bucket_start < $2";
pub const HOURLY_INSERT_SQL: &str =
    "INSERT INTO opsmeter.metrics_hourly SELECT * FROM pg_catalog.unnest($1::opsmeter.metrics_hourly[])";

/// `ops_upsert_daily`: the days of `[$1, $2)` (UTC midnights) are replaced by the merge of their
/// hourly rows; returns nothing (the glue counts with a RETURNING).
pub fn daily_insert_sql(ext: &str) -> String {
    format!(
        "INSERT INTO opsmeter.metrics_daily
SELECT d.bucket_date, d.platform, d.group_id, {vals}, pg_catalog.now()
  FROM (SELECT (h.bucket_start AT TIME ZONE 'UTC')::date AS bucket_date, h.platform, h.group_id,
               {sums},
               {ext}.ops_sketch_merge(h.duration_sketch) AS duration_sketch,
               {ext}.ops_sketch_merge(h.ttft_sketch) AS ttft_sketch
          FROM opsmeter.metrics_hourly h
         WHERE h.bucket_start >= $1 AND h.bucket_start < $2
         GROUP BY 1, 2, 3) d
RETURNING 1",
        vals = value_columns_sql(ext, "d"),
        sums = COUNT_COLUMNS
            .iter()
            .map(|c| format!("pg_catalog.sum(h.{c})::bigint AS {c}"))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

pub const DAILY_DELETE_SQL: &str = "DELETE FROM opsmeter.metrics_daily
 WHERE bucket_date >= ($1 AT TIME ZONE 'UTC')::date AND bucket_date < ($2 AT TIME ZONE 'UTC')::date";

/// The filter that picks one grain: no platform and no group is the overall row; a platform
/// alone is that platform's row; a group (with or without its platform) is that group's rows.
/// `$3` is the platform argument, `$4` the group_id argument.
const GRAIN_FILTER: &str =
    "(CASE WHEN $4 IS NULL THEN x.group_id IS NULL AND x.platform IS NOT DISTINCT FROM $3
      ELSE x.group_id = $4 AND ($3 IS NULL OR x.platform = $3) END)";

/// The query `ops_metrics` runs: `$1` since, `$2` until, `$3` platform, `$4` group_id. The range
/// widens to whole buckets; percentiles come from merged sketches.
pub fn metrics_sql(n: &Names, width: Width) -> String {
    let ext = &n.ext;
    let lo = width.bucket_sql("$1");
    let hi = format!(
        "({} + {})",
        width.bucket_sql("($2 - INTERVAL '1 microsecond')"),
        width.interval_sql()
    );
    let cols =
        "x.platform, x.group_id, x.success_count, x.error_count_total, x.business_limited_count, \
                x.error_count_sla, x.upstream_error_count_excl_429_529, x.upstream_429_count, \
                x.upstream_529_count, x.token_consumed, x.duration_sketch, x.ttft_sketch";
    let rows = match width.plan() {
        Plan::Raw => format!(
            "SELECT {b} AS bucket, {cols} FROM ({grains}) x WHERE {GRAIN_FILTER}",
            b = width.bucket_sql("x.bucket_start"),
            grains = grains_sql(n, width, &lo, &hi),
        ),
        Plan::Hourly => format!(
            "SELECT {b} AS bucket, {cols} FROM opsmeter.metrics_hourly x
              WHERE x.bucket_start >= {lo} AND x.bucket_start < {hi} AND {GRAIN_FILTER}",
            b = width.bucket_sql("x.bucket_start"),
        ),
        Plan::DailyThenHourly => format!(
            "SELECT {bd} AS bucket, {cols} FROM opsmeter.metrics_daily x, split
              WHERE x.bucket_date >= ({lo} AT TIME ZONE 'UTC')::date
                AND x.bucket_date < LEAST(split.at_day, ({hi} AT TIME ZONE 'UTC')::date)
                AND {GRAIN_FILTER}
             UNION ALL
             SELECT {bh} AS bucket, {cols} FROM opsmeter.metrics_hourly x, split
              WHERE x.bucket_start >= GREATEST({lo}, split.at) AND x.bucket_start < {hi}
                AND {GRAIN_FILTER}",
            bd = width.bucket_sql("(x.bucket_date::timestamp AT TIME ZONE 'UTC')"),
            bh = width.bucket_sql("x.bucket_start"),
        ),
    };
    let split = "split AS (
    SELECT COALESCE(pg_catalog.max(bucket_date) + 1, DATE '-infinity') AS at_day,
           COALESCE((pg_catalog.max(bucket_date) + 1)::timestamp AT TIME ZONE 'UTC', TIMESTAMPTZ '-infinity') AS at
      FROM opsmeter.metrics_daily)";
    let with = if width.plan() == Plan::DailyThenHourly {
        format!("WITH {split}\n")
    } else {
        String::new()
    };
    format!(
        "{with}SELECT m.bucket, $3::text, $4::bigint, {vals}
  FROM (SELECT x.bucket,
               {sums},
               {ext}.ops_sketch_merge(x.duration_sketch) AS duration_sketch,
               {ext}.ops_sketch_merge(x.ttft_sketch) AS ttft_sketch
          FROM ({rows}) x
         GROUP BY x.bucket) m
 ORDER BY m.bucket",
        vals = value_columns_sql(ext, "m"),
        sums = COUNT_COLUMNS
            .iter()
            .map(|c| format!("COALESCE(pg_catalog.sum(x.{c}), 0)::bigint AS {c}"))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: i64 = USECS_PER_HOUR;
    const D: i64 = USECS_PER_DAY;

    #[test]
    fn null_empty_and_inverted_windows_do_nothing() {
        assert_eq!(widen(None, Some(5), H), Ok(None));
        assert_eq!(widen(Some(5), None, H), Ok(None));
        assert_eq!(widen(Some(5), Some(5), H), Ok(None));
        assert_eq!(widen(Some(6), Some(5), H), Ok(None));
    }

    #[test]
    fn half_hour_window_widens_to_the_whole_hour() {
        let w = widen(Some(10 * H + H / 2), Some(11 * H), H)
            .unwrap()
            .unwrap();
        assert_eq!(
            w,
            Window {
                start: 10 * H,
                end: 11 * H
            }
        );
        let w = widen(Some(10 * H), Some(10 * H + 1), H).unwrap().unwrap();
        assert_eq!(
            w,
            Window {
                start: 10 * H,
                end: 11 * H
            }
        );
    }

    #[test]
    fn windows_before_2000_floor_downwards() {
        let w = widen(Some(-H / 2), Some(-1), H).unwrap().unwrap();
        assert_eq!(w, Window { start: -H, end: 0 });
    }

    #[test]
    fn infinite_bounds_name_the_argument() {
        let e = widen(Some(i64::MIN), Some(0), H).unwrap_err();
        assert_eq!(
            e.to_string(),
            "start_time must be a finite timestamp, not -infinity"
        );
        let e = widen(Some(0), Some(i64::MAX), H).unwrap_err();
        assert_eq!(
            e.to_string(),
            "end_time must be a finite timestamp, not infinity"
        );
    }

    #[test]
    fn chunks_cover_the_window_in_order() {
        let w = Window {
            start: 0,
            end: 3 * D + 5 * H,
        };
        let c = chunks(w, D);
        assert_eq!(c.len(), 4);
        assert_eq!(c[0], Window { start: 0, end: D });
        assert_eq!(
            c[3],
            Window {
                start: 3 * D,
                end: 3 * D + 5 * H
            }
        );
        assert!(chunks(Window { start: 4, end: 4 }, D).is_empty());
    }

    #[test]
    fn widths_classify() {
        assert_eq!(
            Width::parse(0, 0, 15 * USECS_PER_MINUTE, "15 mins"),
            Ok(Width::Fixed(15 * USECS_PER_MINUTE))
        );
        assert_eq!(
            Width::parse(0, 0, 15 * USECS_PER_MINUTE, "x")
                .unwrap()
                .plan(),
            Plan::Raw
        );
        assert_eq!(
            Width::parse(0, 0, 90 * USECS_PER_MINUTE, "x")
                .unwrap()
                .plan(),
            Plan::Raw
        );
        assert_eq!(Width::parse(0, 0, 6 * H, "x").unwrap().plan(), Plan::Hourly);
        assert_eq!(
            Width::parse(0, 0, 36 * H, "x").unwrap().plan(),
            Plan::Hourly
        );
        assert_eq!(
            Width::parse(0, 1, 0, "x").unwrap().plan(),
            Plan::DailyThenHourly
        );
        assert_eq!(
            Width::parse(0, 0, 48 * H, "x").unwrap().plan(),
            Plan::DailyThenHourly
        );
        assert_eq!(
            Width::parse(0, 7, 0, "x").unwrap().plan(),
            Plan::DailyThenHourly
        );
        assert_eq!(Width::parse(3, 0, 0, "x"), Ok(Width::Months(3)));
        assert_eq!(
            Width::parse(1, 0, 0, "x").unwrap().plan(),
            Plan::DailyThenHourly
        );
        // '1 day -1 hour' is 23 hours
        assert_eq!(Width::parse(0, 1, -H, "x"), Ok(Width::Fixed(23 * H)));
    }

    #[test]
    fn bad_widths_are_rejected_with_the_value_shown() {
        let e = Width::parse(0, 0, 0, "00:00:00").unwrap_err();
        assert_eq!(
            e.to_string(),
            "bucket must be a positive interval, got 00:00:00"
        );
        assert!(matches!(
            Width::parse(0, 0, -H, "-01:00:00"),
            Err(RollupError::WidthNotPositive(_))
        ));
        assert!(matches!(
            Width::parse(-1, 0, 0, "-1 mons"),
            Err(RollupError::WidthNotPositive(_))
        ));
        assert!(matches!(
            Width::parse(1, 2, 0, "1 mon 2 days"),
            Err(RollupError::WidthMixed(_))
        ));
        assert!(matches!(
            Width::parse(1, 0, 1, "x"),
            Err(RollupError::WidthMixed(_))
        ));
        assert!(matches!(
            Width::parse(0, 0, 59_999_999, "x"),
            Err(RollupError::WidthOutOfRange(_))
        ));
        assert!(matches!(
            Width::parse(0, 367, 0, "x"),
            Err(RollupError::WidthOutOfRange(_))
        ));
        assert!(matches!(
            Width::parse(121, 0, 0, "x"),
            Err(RollupError::WidthOutOfRange(_))
        ));
        assert!(Width::parse(0, 0, 0, "x")
            .unwrap_err()
            .hint()
            .unwrap()
            .contains("'15 minutes'"));
    }

    #[test]
    fn month_buckets_start_in_january_for_divisors_of_twelve() {
        assert_eq!(month_bucket_index(2026, 11, 1), 2026 * 12 + 10);
        assert_eq!(month_bucket_index(2026, 11, 3), 2026 * 12 + 9); // October
        assert_eq!(month_bucket_index(2026, 11, 12), 2026 * 12);
        assert_eq!(month_bucket_index(2026, 5, 6), 2026 * 12);
        assert_eq!(month_bucket_index(-1, 12, 12), -12);
    }

    #[test]
    fn both_sketches_come_from_one_pair_state_when_the_catalog_has_it() {
        let mut n = Names {
            ext: "\"my ext\"".into(),
            groups: "public.g".into(),
            usage_logs: "public.u".into(),
            error_logs: "public.e".into(),
            pair: true,
        };
        let args = "(u.duration_ms::float8, u.first_token_ms::float8)";
        let sql = hourly_select_sql(&n);
        assert!(sql.contains(&format!(
            "\"my ext\".ops_sketch_pair_a{args} AS duration_sketch"
        )));
        assert!(sql.contains(&format!(
            "\"my ext\".ops_sketch_pair_b{args} AS ttft_sketch"
        )));
        assert!(!sql.contains(".ops_sketch(u."));
        n.pair = false;
        let sql = hourly_select_sql(&n);
        assert!(!sql.contains("ops_sketch_pair"));
        assert!(sql.contains("\"my ext\".ops_sketch(u.first_token_ms::float8) AS ttft_sketch"));
    }

    #[test]
    fn generated_sql_reads_only_the_given_relations_qualified() {
        let n = Names {
            ext: "\"my ext\"".into(),
            groups: "public.g".into(),
            usage_logs: "public.u".into(),
            error_logs: "public.e".into(),
            pair: false,
        };
        let sql = hourly_select_sql(&n);
        assert!(sql.contains("FROM public.u u"));
        assert!(sql.contains("FROM public.e e"));
        assert!(sql.contains("JOIN public.g g"));
        assert!(sql.contains("\"my ext\".ops_sketch(u.duration_ms::float8)"));
        assert!(!sql.contains("opsmeter.usage_logs"));
        // every function call is schema-qualified: no bare ops_ or aggregate names
        for bare in [
            " count(",
            " sum(",
            " ops_sketch(",
            " ops_quantile(",
            " array_agg(",
        ] {
            assert!(!sql.contains(bare), "unqualified {bare} in {sql}");
        }
        for w in [
            Width::Fixed(15 * USECS_PER_MINUTE),
            Width::Fixed(H),
            Width::Fixed(D),
            Width::Months(2),
        ] {
            let m = metrics_sql(&n, w);
            assert!(!m.contains(" ops_sketch_merge("));
            assert_eq!(m.contains("FROM public.u u"), w.plan() == Plan::Raw);
            assert_eq!(
                m.contains("opsmeter.metrics_daily"),
                w.plan() == Plan::DailyThenHourly
            );
        }
        let d = daily_insert_sql("x");
        assert_eq!(d.matches("x.ops_quantile(").count(), 8);
    }

    #[test]
    fn value_columns_match_the_table_order() {
        let v = value_column_exprs("x", "r");
        let names: Vec<&str> = v.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, &VALUE_COLUMNS[..VALUE_COLUMNS.len() - 1]);
    }

    proptest! {
        #[test]
        fn widening_is_aligned_covering_and_idempotent(
            s in -1_000_000_000_000_000i64..1_000_000_000_000_000,
            len in 1i64..10 * 86_400_000_000,
            unit_is_day in any::<bool>(),
        ) {
            let unit = if unit_is_day { D } else { H };
            let w = widen(Some(s), Some(s + len), unit).unwrap().unwrap();
            prop_assert_eq!(w.start.rem_euclid(unit), 0);
            prop_assert_eq!(w.end.rem_euclid(unit), 0);
            prop_assert!(w.start <= s && s - w.start < unit);
            prop_assert!(w.end >= s + len && w.end - (s + len) < unit);
            prop_assert_eq!(widen(Some(w.start), Some(w.end), unit).unwrap().unwrap(), w);
        }

        #[test]
        fn chunks_partition_the_window(s in -1_000_000i64..1_000_000, len in 0i64..100_000, max in 1i64..5_000) {
            let w = Window { start: s, end: s + len };
            let c = chunks(w, max);
            let mut at = s;
            for piece in &c {
                prop_assert_eq!(piece.start, at);
                prop_assert!(piece.end > piece.start && piece.end - piece.start <= max);
                at = piece.end;
            }
            prop_assert_eq!(at, s + len);
        }

        #[test]
        fn floor_and_ceil_bracket(t in any::<i64>(), unit in 1i64..1_000_000_000_000, origin in -1_000_000i64..1_000_000) {
            let f = floor_to(t, unit, origin);
            prop_assert!(f <= t);
            prop_assert!((t as i128 - f as i128) < unit as i128);
            prop_assert_eq!((f as i128 - origin as i128).rem_euclid(unit as i128), 0);
            let c = ceil_to(t, unit, origin);
            prop_assert!(c >= t);
        }
    }
}
