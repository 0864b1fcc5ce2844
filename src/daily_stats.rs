//! Daily stats (SPEC §4, seed `daily_stats_job`): one immutable row per complete UTC day from
//! the `log_records` source, with the day's top models, plus `ops_stats` for today and the last
//! 7 or 30 days. Rules and SQL text live in [`crate::cores::daily_stats`].

use crate::cores::daily_stats::{self as ds, DailyStatsError, Period};
use crate::cores::records::{day_of, day_text};
use crate::cores::sources::Role;
use crate::error::{OrRaise, SqlError};
use crate::records::date;
use crate::rollups::tstz;
use crate::sources::resolve;
use pgrx::datum::Date;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::collections::BTreeSet;

impl SqlError for DailyStatsError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE
    }
    fn hint(&self) -> Option<String> {
        DailyStatsError::hint(self)
    }
}

extension_sql!(
    r#"
CREATE TABLE opsmeter.daily_stats (
    date           date PRIMARY KEY,
    requests       bigint NOT NULL,
    success        bigint NOT NULL,
    failed         bigint NOT NULL,
    tokens_in      bigint NOT NULL,
    tokens_out     bigint NOT NULL,
    latency_sum_ms bigint NOT NULL,
    top_models     jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE opsmeter.daily_stats IS 'opsmeter daily stats: one immutable row per complete UTC day with traffic in the log_records source (success: 200 <= status < 400; failed: status >= 400 or 0; top 10 models); written by ops_daily_stats_run()';
SELECT pg_catalog.pg_extension_config_dump('opsmeter.daily_stats', '');

CREATE TABLE opsmeter.daily_model_stats (
    date     date NOT NULL,
    model    text NOT NULL,
    requests bigint NOT NULL,
    tokens   bigint NOT NULL,
    PRIMARY KEY (date, model)
);
COMMENT ON TABLE opsmeter.daily_model_stats IS 'opsmeter: every model of each daily_stats day (requests, tokens in + out), written with it, so ops_stats() ranks models over several days exactly';
SELECT pg_catalog.pg_extension_config_dump('opsmeter.daily_model_stats', '');
"#,
    name = "daily_stats_tables",
    requires = ["record_tables"]
);

/// Today's UTC date and `now()` (microseconds).
fn today_and_now() -> (i32, i64) {
    let now: TimestampWithTimeZone = Spi::get_one("SELECT pg_catalog.now()")
        .ok()
        .flatten()
        .unwrap_or_else(|| pgrx::error!("opsmeter: now() is NULL"));
    let now: i64 = now.into();
    (day_of(now), now)
}

fn lock_daily_stats() {
    let (k1, k2) = ds::LOCK_KEYS;
    Spi::run(&format!(
        "SELECT pg_catalog.pg_advisory_xact_lock({k1}, {k2}), pg_catalog.pg_current_xact_id()"
    ))
    .unwrap_or_else(|e| pgrx::error!("opsmeter: could not take the daily stats lock: {e}"));
}

/// Writes one day (already checked complete, lock held); true when a row was written.
fn run_day(source: &str, day: i32) -> bool {
    let exists = Spi::get_one_with_args::<bool>(
        "SELECT EXISTS (SELECT 1 FROM opsmeter.daily_stats WHERE date = $1)",
        &[date(day).into()],
    )
    .unwrap_or_else(|e| pgrx::error!("opsmeter: {e}"))
    .unwrap_or(false);
    if exists {
        return false;
    }
    // model rows left without their day's row (a DBA deleted the row to recompute it)
    Spi::run_with_args(
        "DELETE FROM opsmeter.daily_model_stats WHERE date = $1",
        &[date(day).into()],
    )
    .unwrap_or_else(|e| pgrx::error!("opsmeter: {e}"));
    let start = day as i64 * ds::USECS_PER_DAY;
    Spi::get_one_with_args::<i64>(
        &ds::run_day_sql(source),
        &[
            tstz(start).into(),
            tstz(start + ds::USECS_PER_DAY).into(),
            date(day).into(),
        ],
    )
    .unwrap_or_else(|e| pgrx::error!("opsmeter: daily stats for {} failed: {e}", day_text(day)))
    .unwrap_or(0)
        > 0
}

/// Aggregates one complete UTC day (default: yesterday) of the `log_records` source into
/// `opsmeter.daily_stats`. Idempotent: a day already there is skipped (false), a day without
/// traffic gets no row (false). Rows are never modified afterwards.
#[pg_extern(volatile, strict)]
#[search_path(pg_catalog, pg_temp)]
fn ops_daily_stats_run(
    day: default!(Date, "((pg_catalog.now() AT TIME ZONE 'UTC')::date - 1)"),
) -> bool {
    let (today, _) = today_and_now();
    let day = day.to_pg_epoch_days();
    ds::check_complete("day", day, today, day_text).or_raise();
    let source = resolve(Role::LogRecords);
    lock_daily_stats();
    run_day(&source, day)
}

/// Runs `ops_daily_stats_run` for every day of `from_day .. to_day` (inclusive, all before
/// today); returns the number of days written.
#[pg_extern(volatile, strict)]
#[search_path(pg_catalog, pg_temp)]
fn ops_daily_stats_backfill(from_day: Date, to_day: Date) -> i32 {
    let (today, _) = today_and_now();
    let days = ds::backfill_days(
        from_day.to_pg_epoch_days(),
        to_day.to_pg_epoch_days(),
        today,
        day_text,
    )
    .or_raise();
    let source = resolve(Role::LogRecords);
    lock_daily_stats();
    days.filter(|&d| run_day(&source, d)).count() as i32
}

/// Totals and top models for 'today', 'last7d' or 'last30d' (UTC days up to now): stored days
/// from `opsmeter.daily_stats`, days without a row and today from the source.
#[pg_extern(stable, strict)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn ops_stats(
    period: &str,
) -> TableIterator<
    'static,
    (
        name!(period, String),
        name!(since, TimestampWithTimeZone),
        name!(until, TimestampWithTimeZone),
        name!(requests, i64),
        name!(success, i64),
        name!(failed, i64),
        name!(tokens_in, i64),
        name!(tokens_out, i64),
        name!(latency_sum_ms, i64),
        name!(avg_latency_ms, Option<f64>),
        name!(top_models, pgrx::JsonB),
    ),
> {
    let p = Period::parse(period).or_raise();
    let (today, now) = today_and_now();
    let first = p.first_day(today);
    let source = resolve(Role::LogRecords);
    let stored: BTreeSet<i32> = Spi::connect(|c| {
        c.select(
            "SELECT (date - DATE '2000-01-01') FROM opsmeter.daily_stats WHERE date >= $1 AND date < $2",
            None,
            &[date(first).into(), date(today).into()],
        )?
        .map(|r| r.get::<i32>(1).map(|d| d.unwrap_or(i32::MIN)))
        .collect::<Result<BTreeSet<_>, _>>()
    })
    .unwrap_or_else(|e| pgrx::error!("opsmeter: {e}"));
    let ranges = ds::live_ranges(first, today, &stored, now);
    let lo: Vec<TimestampWithTimeZone> = ranges.iter().map(|r| tstz(r.0)).collect();
    let hi: Vec<TimestampWithTimeZone> = ranges.iter().map(|r| tstz(r.1)).collect();
    let row = Spi::connect(|c| {
        let t = c
            .select(
                &ds::stats_sql(&source),
                None,
                &[date(first).into(), date(today).into(), lo.into(), hi.into()],
            )?
            .first();
        Ok::<_, pgrx::spi::Error>((
            t.get::<i64>(1)?.unwrap_or(0),
            t.get::<i64>(2)?.unwrap_or(0),
            t.get::<i64>(3)?.unwrap_or(0),
            t.get::<i64>(4)?.unwrap_or(0),
            t.get::<i64>(5)?.unwrap_or(0),
            t.get::<i64>(6)?.unwrap_or(0),
            t.get::<pgrx::JsonB>(7)?
                .unwrap_or(pgrx::JsonB(serde_json::Value::Array(vec![]))),
        ))
    })
    .unwrap_or_else(|e| pgrx::error!("opsmeter: stats query failed: {e}"));
    let (requests, success, failed, tokens_in, tokens_out, latency, top) = row;
    let avg = (requests > 0).then(|| latency as f64 / requests as f64);
    TableIterator::once((
        p.name().to_string(),
        tstz(first as i64 * ds::USECS_PER_DAY),
        tstz(now),
        requests,
        success,
        failed,
        tokens_in,
        tokens_out,
        latency,
        avg,
        top,
    ))
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::pgrx_tests::sqlstate_of;
    use pgrx::prelude::*;

    fn seed(days_ago: i32) {
        Spi::run(&format!(
            "INSERT INTO opsmeter.log_records (created_at, model_name, status_code, tokens_in, tokens_out, latency_ms)
             SELECT ((now() AT TIME ZONE 'UTC')::date - {days_ago}) AT TIME ZONE 'UTC' + i * INTERVAL '61 seconds',
                    'model-' || (i % 14), (ARRAY[200, 201, 304, 399, 400, 429, 500, 0])[1 + i % 8],
                    i % 100, i % 37, 50 + i % 900
               FROM generate_series(0, 1400) i"
        ))
        .unwrap();
    }

    /// The day's row equals the sum of its per-model rows, and the top list is the first ten of
    /// them by requests desc, model asc.
    #[pg_test]
    fn the_row_agrees_with_its_models() {
        seed(3);
        assert_eq!(
            Spi::get_one::<bool>(
                "SELECT ops_daily_stats_run((now() AT TIME ZONE 'UTC')::date - 3)"
            )
            .unwrap(),
            Some(true)
        );
        let same = Spi::get_one::<bool>(
            "SELECT d.requests = (SELECT sum(requests) FROM opsmeter.daily_model_stats m WHERE m.date = d.date)
                AND d.tokens_in + d.tokens_out = (SELECT sum(tokens) FROM opsmeter.daily_model_stats m WHERE m.date = d.date)
                AND d.top_models = (SELECT jsonb_agg(jsonb_build_object('model', model, 'requests', requests, 'tokens', tokens)
                                                     ORDER BY requests DESC, model COLLATE \"C\")
                                      FROM (SELECT * FROM opsmeter.daily_model_stats m WHERE m.date = d.date
                                             ORDER BY requests DESC, model COLLATE \"C\" LIMIT 10) t)
                AND d.success + d.failed = d.requests
               FROM opsmeter.daily_stats d",
        )
        .unwrap();
        assert_eq!(same, Some(true));
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM opsmeter.daily_model_stats").unwrap(),
            Some(14)
        );
    }

    /// A failing backfill (to_day is today) writes nothing, not even the complete days.
    #[pg_test]
    fn a_failing_backfill_writes_nothing() {
        seed(2);
        assert_eq!(
            sqlstate_of(
                "PERFORM ops_daily_stats_backfill((now() AT TIME ZONE 'UTC')::date - 5, (now() AT TIME ZONE 'UTC')::date)"
            ),
            "22023"
        );
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM opsmeter.daily_stats").unwrap(),
            Some(0)
        );
        assert_eq!(
            Spi::get_one::<i32>(
                "SELECT ops_daily_stats_backfill((now() AT TIME ZONE 'UTC')::date - 5, (now() AT TIME ZONE 'UTC')::date - 1)"
            )
            .unwrap(),
            Some(1)
        );
    }
}
