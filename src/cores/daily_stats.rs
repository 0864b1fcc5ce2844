//! Daily stats (SPEC §4, seed `daily_stats_job`) as plain Rust: which days a call may write,
//! which periods `ops_stats` answers and from what, and the SQL text.
//!
//! Days are PostgreSQL `date` values (days since 2000-01-01); timestamps are `timestamptz`
//! values (microseconds since 2000-01-01 00:00 UTC). A day is `[day 00:00 UTC, day+1 00:00 UTC)`.

use std::collections::BTreeSet;
use thiserror::Error;

pub const USECS_PER_DAY: i64 = 86_400_000_000;
/// How many models `top_models` keeps (the seed's `LIMIT 10`).
pub const TOP_MODELS: i64 = 10;
/// Taken (transaction-level) by every writer, so two runs of one day write it once.
pub const LOCK_KEYS: (i32, i32) = (0x6f70_736d, 3); // "opsm", daily stats

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DailyStatsError {
    #[error("period must be one of 'today', 'last7d', 'last30d'; got '{0}'")]
    Period(String),
    #[error("{arg} must be before today ({today} UTC): daily stats rows are never modified, so only complete days are written; got {day}")]
    NotComplete {
        arg: &'static str,
        day: String,
        today: String,
    },
    #[error("from_day ({from}) must not be after to_day ({to})")]
    Inverted { from: String, to: String },
}

impl DailyStatsError {
    pub fn hint(&self) -> Option<String> {
        match self {
            DailyStatsError::NotComplete { .. } => Some(
                "Yesterday is the default: SELECT ops_daily_stats_run(); ops_stats('today') reports the current day live."
                    .into(),
            ),
            _ => None,
        }
    }
}

/// The periods `ops_stats` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Today,
    Last7d,
    Last30d,
}

impl Period {
    pub fn parse(s: &str) -> Result<Period, DailyStatsError> {
        match s {
            "today" => Ok(Period::Today),
            "last7d" => Ok(Period::Last7d),
            "last30d" => Ok(Period::Last30d),
            _ => Err(DailyStatsError::Period(s.to_string())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Period::Today => "today",
            Period::Last7d => "last7d",
            Period::Last30d => "last30d",
        }
    }

    /// Number of UTC days the period covers, today included.
    pub fn days(self) -> i32 {
        match self {
            Period::Today => 1,
            Period::Last7d => 7,
            Period::Last30d => 30,
        }
    }

    /// First day of the period when today is `today`.
    pub fn first_day(self, today: i32) -> i32 {
        today - (self.days() - 1)
    }
}

/// `day` may be written only once it is complete: before `today` (UTC).
pub fn check_complete(
    arg: &'static str,
    day: i32,
    today: i32,
    show: impl Fn(i32) -> String,
) -> Result<(), DailyStatsError> {
    if day < today {
        Ok(())
    } else {
        Err(DailyStatsError::NotComplete {
            arg,
            day: show(day),
            today: show(today),
        })
    }
}

/// The inclusive days a backfill runs, after checking the range.
pub fn backfill_days(
    from: i32,
    to: i32,
    today: i32,
    show: impl Fn(i32) -> String,
) -> Result<std::ops::RangeInclusive<i32>, DailyStatsError> {
    if from > to {
        return Err(DailyStatsError::Inverted {
            from: show(from),
            to: show(to),
        });
    }
    check_complete("to_day", to, today, show)?;
    Ok(from..=to)
}

/// The time ranges `ops_stats` reads from the source: complete days of the period without a
/// stored row (merged when adjacent), and today up to `now`. Returns `(start, end)` pairs.
pub fn live_ranges(
    first_day: i32,
    today: i32,
    stored: &BTreeSet<i32>,
    now: i64,
) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    let mut push = |start: i64, end: i64| {
        if end <= start {
            return;
        }
        match out.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => out.push((start, end)),
        }
    };
    for day in first_day..today {
        if !stored.contains(&day) {
            let start = day as i64 * USECS_PER_DAY;
            push(start, start + USECS_PER_DAY);
        }
    }
    push(today as i64 * USECS_PER_DAY, now);
    out
}

/// The per-model aggregation of a source over one day, the seed's counting rules:
/// success is 200 <= status < 400, failed is status >= 400 or status = 0 (a NULL status counts
/// in requests only); sums of NULL-free values; a NULL model counts as ''. `$1`/`$2` bound the
/// day. Columns: model, requests, success, failed, tokens_in, tokens_out, latency_sum.
pub fn per_model_sql(source: &str, ranges: &str) -> String {
    format!(
        "SELECT COALESCE(s.model_name::text, '') AS model,
                pg_catalog.count(*) AS requests,
                pg_catalog.count(*) FILTER (WHERE s.status_code >= 200 AND s.status_code < 400) AS success,
                pg_catalog.count(*) FILTER (WHERE s.status_code >= 400 OR s.status_code = 0) AS failed,
                COALESCE(pg_catalog.sum(s.tokens_in), 0)::numeric AS tokens_in,
                COALESCE(pg_catalog.sum(s.tokens_out), 0)::numeric AS tokens_out,
                COALESCE(pg_catalog.sum(s.latency_ms), 0)::numeric AS latency_sum
           FROM {source} s{ranges}
          GROUP BY 1"
    )
}

/// `top_models`: at most ten `{"model", "requests", "tokens"}` by requests desc, then model name
/// in byte order (deterministic in every database), as a jsonb array (`[]` when none).
pub fn top_models_sql(models: &str) -> String {
    format!(
        "COALESCE((SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                        'model', t.model, 'requests', t.requests, 'tokens', t.tokens)
                        ORDER BY t.requests DESC, t.model COLLATE \"C\")
                     FROM (SELECT m.model, m.requests, m.tokens FROM {models} m
                            ORDER BY m.requests DESC, m.model COLLATE \"C\" LIMIT {TOP_MODELS}) t),
                  '[]'::jsonb)"
    )
}

/// One day's run: writes every model into `daily_model_stats` and the day's row into
/// `daily_stats`, in one statement, when the source has rows in `[$1, $2)`. `$3` is the day.
/// Returns the number of `daily_stats` rows written (0 or 1).
pub fn run_day_sql(source: &str) -> String {
    let per_model = per_model_sql(
        source,
        "\n          WHERE s.created_at >= $1 AND s.created_at < $2",
    );
    let top = top_models_sql(
        "(SELECT model, requests, (tokens_in + tokens_out)::bigint AS tokens FROM m)",
    );
    format!(
        "WITH m AS ({per_model}),
      ins_models AS (
          INSERT INTO opsmeter.daily_model_stats (date, model, requests, tokens)
          SELECT $3, model, requests, (tokens_in + tokens_out)::bigint FROM m),
      ins AS (
          INSERT INTO opsmeter.daily_stats
                 (date, requests, success, failed, tokens_in, tokens_out, latency_sum_ms, top_models, created_at)
          SELECT $3, pg_catalog.sum(requests), pg_catalog.sum(success), pg_catalog.sum(failed),
                 pg_catalog.sum(tokens_in), pg_catalog.sum(tokens_out), pg_catalog.round(pg_catalog.sum(latency_sum)),
                 {top}, pg_catalog.now()
            FROM m
          HAVING pg_catalog.count(*) > 0
          RETURNING 1)
SELECT pg_catalog.count(*) FROM ins"
    )
}

/// `ops_stats`: stored days `[$1, $2)` (dates) from `daily_stats` / `daily_model_stats`, plus the
/// source over the ranges `unnest($3, $4)`. One row: requests, success, failed, tokens_in,
/// tokens_out, latency_sum_ms, top_models.
pub fn stats_sql(source: &str) -> String {
    let live = per_model_sql(
        source,
        "\n           JOIN ROWS FROM (pg_catalog.unnest($3::timestamptz[]), pg_catalog.unnest($4::timestamptz[])) AS r(lo, hi)
             ON s.created_at >= r.lo AND s.created_at < r.hi",
    );
    let top = top_models_sql("models");
    format!(
        "WITH live AS ({live}),
      stored AS (
          SELECT * FROM opsmeter.daily_stats d WHERE d.date >= $1 AND d.date < $2),
      models AS (
          SELECT model, pg_catalog.sum(requests)::bigint AS requests, pg_catalog.sum(tokens)::bigint AS tokens
            FROM (SELECT dm.model, dm.requests, dm.tokens::numeric AS tokens
                    FROM opsmeter.daily_model_stats dm
                    JOIN stored ON stored.date = dm.date
                  UNION ALL
                  SELECT l.model, l.requests, l.tokens_in + l.tokens_out FROM live l) u
           GROUP BY model),
      totals AS (
          SELECT pg_catalog.sum(requests) AS requests, pg_catalog.sum(success) AS success,
                 pg_catalog.sum(failed) AS failed, pg_catalog.sum(tokens_in) AS tokens_in,
                 pg_catalog.sum(tokens_out) AS tokens_out, pg_catalog.sum(latency) AS latency
            FROM (SELECT requests, success, failed, tokens_in::numeric, tokens_out::numeric,
                         latency_sum_ms::numeric AS latency FROM stored
                  UNION ALL
                  SELECT requests, success, failed, tokens_in, tokens_out, latency_sum FROM live) u)
SELECT COALESCE(t.requests, 0)::bigint, COALESCE(t.success, 0)::bigint, COALESCE(t.failed, 0)::bigint,
       COALESCE(t.tokens_in, 0)::bigint, COALESCE(t.tokens_out, 0)::bigint,
       pg_catalog.round(COALESCE(t.latency, 0))::bigint,
       {top}
  FROM totals t"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(d: i32) -> String {
        format!("day {d}")
    }

    #[test]
    fn periods() {
        assert_eq!(Period::parse("today"), Ok(Period::Today));
        assert_eq!(Period::parse("last30d").map(|p| p.first_day(100)), Ok(71));
        assert_eq!(Period::Last7d.first_day(100), 94);
        assert_eq!(Period::Today.first_day(100), 100);
        let e = Period::parse("yesterday").unwrap_err();
        assert_eq!(
            e.to_string(),
            "period must be one of 'today', 'last7d', 'last30d'; got 'yesterday'"
        );
        assert!(Period::parse("Today").is_err());
        for p in [Period::Today, Period::Last7d, Period::Last30d] {
            assert_eq!(Period::parse(p.name()), Ok(p));
        }
    }

    #[test]
    fn only_complete_days_are_written() {
        assert!(check_complete("day", 99, 100, show).is_ok());
        let e = check_complete("day", 100, 100, show).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("day must be before today (day 100 UTC)"));
        assert!(check_complete("day", 101, 100, show).is_err());
        assert_eq!(backfill_days(90, 99, 100, show), Ok(90..=99));
        assert_eq!(backfill_days(90, 90, 100, show).map(|r| r.count()), Ok(1));
        assert!(matches!(
            backfill_days(91, 90, 100, show),
            Err(DailyStatsError::Inverted { .. })
        ));
        assert!(matches!(
            backfill_days(90, 100, 100, show),
            Err(DailyStatsError::NotComplete { arg: "to_day", .. })
        ));
    }

    #[test]
    fn live_ranges_cover_exactly_the_unstored_days_and_today() {
        let d = USECS_PER_DAY;
        let now = 100 * d + 5;
        let stored: BTreeSet<i32> = [95, 96, 98].into_iter().collect();
        assert_eq!(
            live_ranges(94, 100, &stored, now),
            vec![(94 * d, 95 * d), (97 * d, 98 * d), (99 * d, now)]
        );
        assert_eq!(live_ranges(100, 100, &stored, now), vec![(100 * d, now)]);
        // nothing stored: one range from the first day to now
        assert_eq!(
            live_ranges(94, 100, &BTreeSet::new(), now),
            vec![(94 * d, now)]
        );
        // now exactly at midnight: today contributes nothing
        assert_eq!(live_ranges(100, 100, &stored, 100 * d), vec![]);
    }

    #[test]
    fn brute_force_live_ranges() {
        // every instant of the period is covered once iff its day is unstored or today
        let d = USECS_PER_DAY;
        for mask in 0u32..64 {
            let stored: BTreeSet<i32> = (0..6)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| 10 + i)
                .collect();
            let now = 16 * d + d / 3;
            let ranges = live_ranges(10, 16, &stored, now);
            for w in ranges.windows(2) {
                assert!(w[0].1 < w[1].0, "ranges overlap or touch: {ranges:?}");
            }
            for h in (10 * d..now).step_by((d / 4) as usize) {
                let day = (h / d) as i32;
                let covered = ranges.iter().filter(|(lo, hi)| *lo <= h && h < *hi).count();
                let want = usize::from(day == 16 || !stored.contains(&day));
                assert_eq!(covered, want, "mask {mask} at {h}");
            }
        }
    }

    #[test]
    fn sql_has_the_seed_rules() {
        let s = run_day_sql("opsmeter.log_records");
        assert!(s.contains("s.status_code >= 200 AND s.status_code < 400"));
        assert!(s.contains("s.status_code >= 400 OR s.status_code = 0"));
        assert!(s.contains("LIMIT 10"));
        assert!(s.contains("HAVING pg_catalog.count(*) > 0"));
        let q = stats_sql("opsmeter.log_records");
        assert!(q.contains(
            "pg_catalog.unnest($3::timestamptz[]), pg_catalog.unnest($4::timestamptz[])"
        ));
    }
}
