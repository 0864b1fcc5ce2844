//! The job framework (SPEC §7) as plain Rust: which jobs exist, when each one is due next,
//! which days the daily-stats catch-up covers, which day partitions of the raw log tables are
//! created ahead and which ones retention drops, and the checks on settings and on queue-worker
//! registrations.
//!
//! Timestamps are PostgreSQL `timestamptz` values: microseconds since 2000-01-01 00:00 UTC.
//! Days are PostgreSQL `date` values: days since 2000-01-01.

use crate::cores::queue::parse_interval_us;
use crate::cores::records::{civil_from_days, ymd_day, UNIX_TO_PG_EPOCH_DAYS};
use thiserror::Error;

pub const USECS_PER_SECOND: i64 = 1_000_000;
pub const USECS_PER_MINUTE: i64 = 60 * USECS_PER_SECOND;
pub const USECS_PER_DAY: i64 = 86_400 * USECS_PER_SECOND;

/// The jobs every installation has, in the order the worker runs them when several are due.
pub const BUILTIN: [&str; 4] = ["partitions", "rollup", "daily_stats", "retention"];

/// The raw log tables opsmeter owns and partitions by UTC day (`opsmeter.<table>`).
pub const LOG_TABLES: [&str; 3] = ["usage_logs", "error_logs", "log_records"];

/// A job that failed (or was skipped because another run held its lock) is tried again after
/// at most this long, whatever its interval.
pub const RETRY_AFTER_US: i64 = USECS_PER_MINUTE;

/// The first key of every job's advisory lock (`'opsj'`); the second is `hashtext(job)`.
/// Advisory locks belong to one database, so this is one lock per (database, job).
pub const JOB_LOCK_KEY: i32 = 0x6f70_736a;

/// The most day partitions the partitions job creates in one run for rows that landed in a
/// table's default partition (the rest follow in the next runs).
pub const MAX_CATCH_UP_PARTITIONS: usize = 62;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JobError {
    #[error("no job named \"{name}\"; jobs: {known}")]
    UnknownJob { name: String, known: String },
    #[error("{arg} must be {accepted}, got {got}")]
    Argument {
        arg: &'static str,
        accepted: &'static str,
        got: String,
    },
    #[error("no queue worker named \"{name}\"; queue workers: {known}")]
    UnknownWorker { name: String, known: String },
    #[error("queue worker name \"{0}\" is the name of a built-in job")]
    ReservedName(String),
    #[error("setting {name} must be {accepted}, got \"{value}\"")]
    Setting {
        name: &'static str,
        value: String,
        accepted: &'static str,
    },
}

/// How PostgreSQL should see a [`JobError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    InvalidParameter,
    UndefinedObject,
}

impl JobError {
    pub fn class(&self) -> Class {
        match self {
            JobError::UnknownJob { .. } | JobError::UnknownWorker { .. } => Class::UndefinedObject,
            _ => Class::InvalidParameter,
        }
    }

    pub fn hint(&self) -> Option<String> {
        match self {
            JobError::UnknownJob { .. } => Some(
                "Queue workers are jobs once registered with ops_worker_register(); ops_health() lists every job."
                    .into(),
            ),
            JobError::UnknownWorker { .. } => {
                Some("Register one with ops_worker_register(); ops_workers() lists them.".into())
            }
            JobError::ReservedName(_) => Some(format!(
                "Built-in jobs: {}; pick another name for the queue worker.",
                BUILTIN.join(", ")
            )),
            _ => None,
        }
    }
}

/// What a job does, which decides when it is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rollup,
    DailyStats,
    Partitions,
    Retention,
    /// A registered queue worker, run every `every` microseconds.
    Queue {
        every_us: i64,
    },
}

/// The kind of a built-in job name.
pub fn builtin(name: &str) -> Option<Kind> {
    match name {
        "rollup" => Some(Kind::Rollup),
        "daily_stats" => Some(Kind::DailyStats),
        "partitions" => Some(Kind::Partitions),
        "retention" => Some(Kind::Retention),
        _ => None,
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Error,
    Skipped,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "ok" => Some(Status::Ok),
            "error" => Some(Status::Error),
            "skipped" => Some(Status::Skipped),
            _ => None,
        }
    }
}

/// What is known of a job's past runs (`opsmeter.job_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct State {
    pub last_run_at: Option<i64>,
    pub last_status: Option<Status>,
    pub last_ok_at: Option<i64>,
    pub consecutive_failures: i32,
}

impl State {
    /// The state after a run that started at `at` ended with `status`.
    pub fn after(self, at: i64, status: Status) -> State {
        State {
            last_run_at: Some(at),
            last_status: Some(status),
            last_ok_at: if status == Status::Ok {
                Some(at)
            } else {
                self.last_ok_at
            },
            consecutive_failures: match status {
                Status::Ok => 0,
                Status::Error => self.consecutive_failures.saturating_add(1),
                Status::Skipped => self.consecutive_failures,
            },
        }
    }
}

/// The settings that decide when jobs are due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// `opsmeter.rollup_interval`.
    pub rollup_every_us: i64,
    /// `opsmeter.maintenance_interval`: how often partitions and retention run.
    pub maintenance_every_us: i64,
    /// `opsmeter.daily_stats_at`: time of the UTC day after which yesterday is written.
    pub daily_at_us: i64,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            rollup_every_us: USECS_PER_MINUTE,
            maintenance_every_us: 60 * USECS_PER_MINUTE,
            daily_at_us: 5 * USECS_PER_MINUTE,
        }
    }
}

/// The latest instant at or before `now` at which a UTC day's daily stats became due (the
/// day before that instant's day is the one to write).
pub fn daily_due_at(now: i64, daily_at_us: i64) -> i64 {
    let today = now.div_euclid(USECS_PER_DAY) * USECS_PER_DAY;
    if now >= today + daily_at_us {
        today + daily_at_us
    } else {
        today - USECS_PER_DAY + daily_at_us
    }
}

/// How often a job runs when all goes well (for `daily_stats`: once a day).
pub fn interval(kind: Kind, schedule: &Schedule) -> i64 {
    match kind {
        Kind::Rollup => schedule.rollup_every_us,
        Kind::Partitions | Kind::Retention => schedule.maintenance_every_us,
        Kind::Queue { every_us } => every_us,
        Kind::DailyStats => USECS_PER_DAY,
    }
}

/// How long after a failed or skipped run a job is tried again: its interval, at most
/// [`RETRY_AFTER_US`].
pub fn retry_wait(kind: Kind, schedule: &Schedule) -> i64 {
    interval(kind, schedule).min(RETRY_AFTER_US)
}

/// When a job is due next, given its state and the time now. A job that never ran is due now;
/// one whose last run failed or was skipped is due again after [`retry_wait`].
pub fn next_run(kind: Kind, state: &State, schedule: &Schedule, now: i64) -> i64 {
    let Some(last) = state.last_run_at else {
        return now;
    };
    let failed = state.last_status != Some(Status::Ok);
    let wait = if failed {
        retry_wait(kind, schedule)
    } else {
        interval(kind, schedule)
    };
    match kind {
        Kind::Rollup | Kind::Partitions | Kind::Retention | Kind::Queue { .. } => {
            last.saturating_add(wait)
        }
        Kind::DailyStats => {
            let due = daily_due_at(now, schedule.daily_at_us);
            match state.last_ok_at {
                Some(ok) if ok >= due => due + USECS_PER_DAY,
                _ if last >= due => last.saturating_add(retry_wait(kind, schedule)),
                _ => now,
            }
        }
    }
}

/// The days the daily-stats job writes at `now`: from the day after the latest written day
/// (or, with none written, from `limit` days back) through the last complete day that is due,
/// at most `limit` days, oldest first. Empty when everything due is written.
pub fn daily_catch_up(
    now: i64,
    daily_at_us: i64,
    latest_written: Option<i32>,
    limit: i32,
) -> Option<(i32, i32)> {
    let due_day = (daily_due_at(now, daily_at_us).div_euclid(USECS_PER_DAY) - 1) as i32;
    let floor = due_day - limit.max(1) + 1;
    let from = match latest_written {
        Some(d) => (d + 1).max(floor),
        None => floor,
    };
    (from <= due_day).then_some((from, due_day))
}

/// The name of a log table's day partition: `usage_logs_p20261122`.
pub fn partition_name(table: &str, day: i32) -> String {
    let (y, m, d) = civil_from_days(day as i64 + UNIX_TO_PG_EPOCH_DAYS);
    format!("{table}_p{y:04}{m:02}{d:02}")
}

/// The name of a log table's default partition, which holds rows of days without a partition.
pub fn default_partition(table: &str) -> String {
    format!("{table}_default")
}

/// The day of `table`'s partition called `name`, when `name` is one of [`partition_name`]'s.
pub fn partition_day(table: &str, name: &str) -> Option<i32> {
    ymd_day(name.strip_prefix(table)?.strip_prefix("_p")?)
}

/// The days the partitions job makes sure exist: today through `ahead` days ahead, then the
/// days that have rows in the default partition (oldest first, at most
/// [`MAX_CATCH_UP_PARTITIONS`] of them), each once, minus the ones that exist.
pub fn partitions_to_create(
    today: i32,
    ahead: i32,
    in_default: &[i32],
    existing: &[i32],
) -> Vec<i32> {
    let mut want: Vec<i32> = (today..=today.saturating_add(ahead.max(0))).collect();
    let mut stray: Vec<i32> = in_default.to_vec();
    stray.sort_unstable();
    stray.dedup();
    want.extend(stray.into_iter().take(MAX_CATCH_UP_PARTITIONS));
    let mut seen = std::collections::BTreeSet::new();
    want.retain(|d| !existing.contains(d) && seen.insert(*d));
    want
}

/// The partitions retention drops at `now`: those whose whole day ended at least `retention_us`
/// ago (a row is kept while it is younger than the retention). `retention_us == 0` keeps all.
pub fn retention_drops(partitions: &[(String, i32)], now: i64, retention_us: i64) -> Vec<String> {
    if retention_us <= 0 {
        return Vec::new();
    }
    let cutoff = now.saturating_sub(retention_us);
    let mut drop: Vec<(i32, String)> = partitions
        .iter()
        .filter(|(_, day)| (*day as i64 + 1) * USECS_PER_DAY <= cutoff)
        .map(|(name, day)| (*day, name.clone()))
        .collect();
    drop.sort();
    drop.into_iter().map(|(_, n)| n).collect()
}

fn setting(name: &'static str, value: &str, accepted: &'static str) -> JobError {
    JobError::Setting {
        name,
        value: value.to_string(),
        accepted,
    }
}

/// `opsmeter.rollup_interval` / `opsmeter.maintenance_interval`: a fixed-length interval from
/// one second to one day.
pub fn job_interval(name: &'static str, text: &str) -> Result<i64, JobError> {
    match parse_interval_us(text) {
        Ok(us) if (USECS_PER_SECOND..=USECS_PER_DAY).contains(&us) => Ok(us),
        _ => Err(setting(
            name,
            text,
            "an interval from 1 second to 1 day, such as '1 minute'",
        )),
    }
}

/// `opsmeter.retention`: how long raw log rows are kept, in whole days or more; `0` keeps all.
pub fn retention(text: &str) -> Result<i64, JobError> {
    let bad = || {
        setting(
            "opsmeter.retention",
            text,
            "0 (keep everything) or an interval of at least 1 day, such as '30 days'",
        )
    };
    match parse_interval_us(text) {
        Ok(0) => Ok(0),
        Ok(us) if us >= USECS_PER_DAY => Ok(us),
        _ => Err(bad()),
    }
}

/// `opsmeter.daily_stats_at`: a time of the UTC day, `HH:MM` or `HH:MM:SS`, before 24:00.
pub fn daily_at(text: &str) -> Result<i64, JobError> {
    let ok = text.trim().contains(':');
    match parse_interval_us(text) {
        Ok(us) if ok && (0..USECS_PER_DAY).contains(&us) => Ok(us),
        _ => Err(setting(
            "opsmeter.daily_stats_at",
            text,
            "a UTC time of day from 00:00 to 23:59:59, such as '00:05'",
        )),
    }
}

/// Checks the arguments of `ops_worker_register`; returns `every` in microseconds.
pub fn check_worker(name: &str, batch: i32, every_us: i64) -> Result<i64, JobError> {
    if builtin(name).is_some() {
        return Err(JobError::ReservedName(name.to_string()));
    }
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.' | b':'));
    if !name_ok {
        return Err(JobError::Argument {
            arg: "name",
            accepted: "1 to 63 characters of letters, digits, _ - . :",
            got: format!("\"{name}\""),
        });
    }
    if !(1..=10_000).contains(&batch) {
        return Err(JobError::Argument {
            arg: "batch",
            accepted: "between 1 and 10000",
            got: batch.to_string(),
        });
    }
    if !(10_000..=USECS_PER_DAY).contains(&every_us) {
        return Err(JobError::Argument {
            arg: "every",
            accepted: "an interval from 10 milliseconds to 1 day",
            got: format!("{} seconds", every_us as f64 / 1e6),
        });
    }
    Ok(every_us)
}

/// The job's name checked against the built-ins and the registered queue workers.
pub fn resolve(name: &str, workers: &[(String, i64)]) -> Result<Kind, JobError> {
    if let Some(k) = builtin(name) {
        return Ok(k);
    }
    if let Some((_, every_us)) = workers.iter().find(|(n, _)| n == name) {
        return Ok(Kind::Queue {
            every_us: *every_us,
        });
    }
    let mut known: Vec<String> = BUILTIN.iter().map(|s| s.to_string()).collect();
    known.extend(workers.iter().map(|(n, _)| n.clone()));
    Err(JobError::UnknownJob {
        name: name.to_string(),
        known: known.join(", "),
    })
}

/// Keeps `keep` newest job runs: the id below which rows are trimmed, if any.
pub fn trim_below(max_id: i64, keep: i64) -> Option<i64> {
    let cut = max_id.saturating_sub(keep.max(1)) + 1;
    (cut > 1).then_some(cut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DAY: i64 = USECS_PER_DAY;
    const MIN: i64 = USECS_PER_MINUTE;

    fn day(y: i64, m: u32, d: u32) -> i32 {
        (crate::cores::records::days_from_civil(y, m, d) - UNIX_TO_PG_EPOCH_DAYS) as i32
    }

    #[test]
    fn a_job_that_never_ran_is_due_now_and_then_every_interval() {
        let s = Schedule::default();
        let now = 1_000 * DAY + 7 * MIN;
        let fresh = State::default();
        for k in [Kind::Rollup, Kind::Partitions, Kind::DailyStats] {
            assert_eq!(next_run(k, &fresh, &s, now), now);
        }
        let ran = fresh.after(now, Status::Ok);
        assert_eq!(next_run(Kind::Rollup, &ran, &s, now), now + MIN);
        assert_eq!(next_run(Kind::Retention, &ran, &s, now), now + 60 * MIN);
        let q = Kind::Queue {
            every_us: USECS_PER_SECOND,
        };
        assert_eq!(next_run(q, &ran, &s, now), now + USECS_PER_SECOND);
    }

    #[test]
    fn a_failed_or_skipped_run_is_retried_within_a_minute() {
        let s = Schedule::default();
        let now = 1_000 * DAY;
        for status in [Status::Error, Status::Skipped] {
            let st = State::default().after(now, status);
            assert_eq!(next_run(Kind::Partitions, &st, &s, now), now + MIN);
            // a short interval is not lengthened
            let q = Kind::Queue {
                every_us: USECS_PER_SECOND,
            };
            assert_eq!(next_run(q, &st, &s, now), now + USECS_PER_SECOND);
        }
    }

    #[test]
    fn failures_count_until_a_success_and_skips_do_not_count() {
        let st = State::default()
            .after(1, Status::Error)
            .after(2, Status::Skipped)
            .after(3, Status::Error);
        assert_eq!(st.consecutive_failures, 2);
        assert_eq!(st.last_ok_at, None);
        let ok = st.after(4, Status::Ok);
        assert_eq!((ok.consecutive_failures, ok.last_ok_at), (0, Some(4)));
        let later = ok.after(5, Status::Error);
        assert_eq!(later.last_ok_at, Some(4));
        assert_eq!(later.last_status, Some(Status::Error));
    }

    #[test]
    fn daily_stats_are_due_after_the_time_of_day_once_a_day() {
        let s = Schedule::default(); // 00:05
        let d = 9_000 * DAY;
        // ran OK at 00:06: next is tomorrow 00:05
        let st = State::default().after(d + 6 * MIN, Status::Ok);
        assert_eq!(
            next_run(Kind::DailyStats, &st, &s, d + 10 * MIN),
            d + DAY + 5 * MIN
        );
        // at 00:03 the day before's run still counts: due today 00:05
        let st = State::default().after(d - DAY + 6 * MIN, Status::Ok);
        assert_eq!(
            next_run(Kind::DailyStats, &st, &s, d + 3 * MIN),
            d + 5 * MIN
        );
        // the worker was down over midnight: due at once
        assert_eq!(
            next_run(Kind::DailyStats, &st, &s, d + 9 * 60 * MIN),
            d + 9 * 60 * MIN
        );
        // failed after the due time: retried a minute later
        let failed = st.after(d + 6 * MIN, Status::Error);
        assert_eq!(
            next_run(Kind::DailyStats, &failed, &s, d + 6 * MIN),
            d + 7 * MIN
        );
    }

    #[test]
    fn catch_up_covers_missed_days_up_to_the_limit() {
        let at = 5 * MIN;
        let d = day(2026, 12, 2) as i64;
        let now = d * DAY + 10 * MIN; // 00:10 on Dec 2: Dec 1 is due
        let dec1 = day(2026, 12, 1);
        assert_eq!(daily_catch_up(now, at, Some(dec1), 7), None);
        assert_eq!(
            daily_catch_up(now, at, Some(dec1 - 1), 7),
            Some((dec1, dec1))
        );
        assert_eq!(
            daily_catch_up(now, at, Some(dec1 - 3), 7),
            Some((dec1 - 2, dec1))
        );
        // down for a month: the last 7 days
        assert_eq!(
            daily_catch_up(now, at, Some(dec1 - 30), 7),
            Some((dec1 - 6, dec1))
        );
        assert_eq!(daily_catch_up(now, at, None, 3), Some((dec1 - 2, dec1)));
        // at 00:03 Dec 1 is not due yet
        let early = d * DAY + 3 * MIN;
        assert_eq!(daily_catch_up(early, at, Some(dec1 - 1), 7), None);
        assert_eq!(
            daily_catch_up(early, at, Some(dec1 - 2), 7),
            Some((dec1 - 1, dec1 - 1))
        );
    }

    #[test]
    fn partition_names_round_trip_and_reject_others() {
        let d = day(2026, 2, 28);
        assert_eq!(partition_name("usage_logs", d), "usage_logs_p20260228");
        assert_eq!(partition_day("usage_logs", "usage_logs_p20260228"), Some(d));
        assert_eq!(partition_day("usage_logs", "usage_logs_p20260230"), None);
        assert_eq!(partition_day("usage_logs", "usage_logs_default"), None);
        assert_eq!(partition_day("usage_logs", "error_logs_p20260228"), None);
        assert_eq!(partition_day("usage_logs", "usage_logs_p2026022"), None);
        assert_eq!(partition_day("usage_logs", "usage_logs_p2026-228"), None);
        assert_eq!(default_partition("log_records"), "log_records_default");
    }

    #[test]
    fn partitions_ahead_and_strays_without_repeats() {
        let t = day(2026, 12, 2);
        assert_eq!(
            partitions_to_create(t, 3, &[], &[]),
            vec![t, t + 1, t + 2, t + 3]
        );
        assert_eq!(
            partitions_to_create(t, 3, &[], &[t, t + 1]),
            vec![t + 2, t + 3]
        );
        assert_eq!(
            partitions_to_create(t, 0, &[t - 5, t, t - 5, t - 9], &[]),
            vec![t, t - 9, t - 5]
        );
        let many: Vec<i32> = (0..100).map(|i| t - 200 + i).collect();
        assert_eq!(
            partitions_to_create(t, 0, &many, &[t]).len(),
            MAX_CATCH_UP_PARTITIONS
        );
    }

    #[test]
    fn forty_days_with_thirty_days_retention_drop_exactly_ten() {
        let today = day(2026, 12, 2);
        let now = today as i64 * DAY + 13 * 60 * MIN;
        let parts: Vec<(String, i32)> = (1..=40)
            .map(|i| (partition_name("usage_logs", today - i), today - i))
            .chain((0..=3).map(|i| (partition_name("usage_logs", today + i), today + i)))
            .collect();
        let dropped = retention_drops(&parts, now, 30 * DAY);
        assert_eq!(dropped.len(), 10);
        assert_eq!(dropped[0], partition_name("usage_logs", today - 40));
        assert_eq!(dropped[9], partition_name("usage_logs", today - 31));
        assert!(retention_drops(&parts, now, 0).is_empty());
    }

    #[test]
    fn settings_are_checked() {
        assert_eq!(job_interval("x", "1 minute"), Ok(MIN));
        assert_eq!(job_interval("x", "2s"), Ok(2 * USECS_PER_SECOND));
        assert!(job_interval("x", "0.5s").is_err());
        assert!(job_interval("x", "2 days").is_err());
        assert!(job_interval("x", "1 month").is_err());
        assert_eq!(retention("30 days"), Ok(30 * DAY));
        assert_eq!(retention("0"), Ok(0));
        assert!(retention("12 hours").is_err());
        assert!(retention("-3 days").is_err());
        assert!(retention("1 year").is_err());
        assert_eq!(daily_at("00:05"), Ok(5 * MIN));
        assert_eq!(daily_at("23:59:59"), Ok(DAY - USECS_PER_SECOND));
        assert!(daily_at("24:00").is_err());
        assert!(daily_at("5 minutes").is_err());
        assert!(daily_at("").is_err());
    }

    #[test]
    fn worker_registrations_are_checked() {
        assert_eq!(
            check_worker("mail", 100, USECS_PER_SECOND),
            Ok(USECS_PER_SECOND)
        );
        assert!(matches!(
            check_worker("rollup", 100, USECS_PER_SECOND),
            Err(JobError::ReservedName(_))
        ));
        for (name, batch, every) in [
            ("", 1, USECS_PER_SECOND),
            ("a b", 1, USECS_PER_SECOND),
            (&"x".repeat(64), 1, USECS_PER_SECOND),
            ("ok", 0, USECS_PER_SECOND),
            ("ok", 10_001, USECS_PER_SECOND),
            ("ok", 1, 0),
            ("ok", 1, 2 * DAY),
        ] {
            let e = check_worker(name, batch, every).unwrap_err();
            assert_eq!(e.class(), Class::InvalidParameter, "{e}");
        }
        let w = vec![("mail".to_string(), USECS_PER_SECOND)];
        assert_eq!(resolve("rollup", &w), Ok(Kind::Rollup));
        assert_eq!(
            resolve("mail", &w),
            Ok(Kind::Queue {
                every_us: USECS_PER_SECOND
            })
        );
        let e = resolve("nope", &w).unwrap_err();
        assert_eq!(e.class(), Class::UndefinedObject);
        assert!(
            e.to_string()
                .contains("partitions, rollup, daily_stats, retention, mail"),
            "{e}"
        );
    }

    #[test]
    fn trimming_keeps_the_newest() {
        assert_eq!(trim_below(100, 10), Some(91));
        assert_eq!(trim_below(10, 10), None);
        assert_eq!(trim_below(5, 10), None);
    }

    proptest! {
        /// Retention against a one-at-a-time oracle: a partition goes exactly when its last
        /// instant is older than the retention, and never one with a row younger than it.
        #[test]
        fn retention_matches_its_definition(
            days in proptest::collection::btree_set(8_000i32..8_100, 0..60),
            now_off in 0i64..DAY,
            keep_days in 0i64..50,
        ) {
            let now = 8_060 * DAY + now_off;
            let parts: Vec<(String, i32)> =
                days.iter().map(|d| (partition_name("error_logs", *d), *d)).collect();
            let dropped = retention_drops(&parts, now, keep_days * DAY);
            for (name, d) in &parts {
                let newest_row = (*d as i64 + 1) * DAY - 1;
                let expect = keep_days > 0 && newest_row < now - keep_days * DAY;
                prop_assert_eq!(dropped.contains(name), expect, "day {} keep {}", d, keep_days);
            }
        }

        /// The next run is never before the last run, and a job that ran OK is not due again
        /// before its interval.
        #[test]
        fn next_run_respects_the_interval(
            last in 0i64..1_000 * DAY,
            gap in 0i64..3 * DAY,
            every_s in 1i64..86_400,
            ok in any::<bool>(),
        ) {
            let s = Schedule { rollup_every_us: every_s * USECS_PER_SECOND, ..Schedule::default() };
            let st = State::default().after(last, if ok { Status::Ok } else { Status::Error });
            let next = next_run(Kind::Rollup, &st, &s, last + gap);
            prop_assert!(next > last);
            if ok {
                prop_assert_eq!(next, last + every_s * USECS_PER_SECOND);
            } else {
                prop_assert!(next <= last + RETRY_AFTER_US);
            }
            let daily = next_run(Kind::DailyStats, &st, &s, last + gap);
            prop_assert!(daily >= last.min(last + gap));
        }
    }
}
