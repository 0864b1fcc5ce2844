//! The job framework (SPEC §7): every job opsmeter runs by itself is also `ops_run_job(name)`,
//! the one code path the background worker, pg_cron and a psql call share. A run takes the
//! job's advisory lock or is recorded as `skipped`, runs the job in a subtransaction so a
//! failure is recorded (not raised) and never stops the other jobs, and writes
//! `opsmeter.job_runs` (capped) and `opsmeter.job_state` (what `ops_health()` reads).
//! Queue workers registered with `ops_worker_register` are jobs too. The rules (schedules,
//! catch-up days, names) live in [`crate::cores::jobs`].

use crate::cores::jobs::{self as jc, Class, JobError, Kind, State, Status};
use crate::error::{OrRaise, SqlError};
use crate::rollups::{ext_schema, tstz, us};
use crate::{gucs, partitions, subxact};
use pgrx::datum::{DatumWithOid, Interval};
use pgrx::prelude::*;
use pgrx::{JsonB, PgSqlErrorCode};
use serde_json::json;
use std::collections::HashMap;

impl SqlError for JobError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        match self.class() {
            Class::InvalidParameter => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            Class::UndefinedObject => PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        }
    }
    fn hint(&self) -> Option<String> {
        JobError::hint(self)
    }
}

extension_sql!(
    r#"
CREATE TABLE opsmeter.job_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job         text NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    status      text NOT NULL CHECK (status IN ('ok', 'error', 'skipped')),
    rows        bigint NOT NULL DEFAULT 0,
    message     text,
    pid         integer NOT NULL,
    runner      text NOT NULL
);
CREATE INDEX job_runs_job ON opsmeter.job_runs (job, started_at);
COMMENT ON TABLE opsmeter.job_runs IS 'opsmeter: one row per job run (ok, error or skipped because another run held the job''s lock), by the background worker, pg_cron or a SQL call; the newest opsmeter.job_runs_keep rows are kept; an idle queue-worker run (no operation) is not written';
SELECT pg_catalog.pg_extension_config_dump('opsmeter.job_runs', '');
SELECT pg_catalog.pg_extension_config_dump('opsmeter.job_runs_id_seq', '');

CREATE TABLE opsmeter.job_state (
    job                  text PRIMARY KEY,
    last_run_at          timestamptz NOT NULL,
    last_finished_at     timestamptz NOT NULL,
    last_status          text NOT NULL CHECK (last_status IN ('ok', 'error', 'skipped')),
    last_ok_at           timestamptz,
    consecutive_failures integer NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    last_rows            bigint NOT NULL DEFAULT 0,
    last_message         text
);
COMMENT ON TABLE opsmeter.job_state IS 'opsmeter: the latest run of each job (what ops_health() and the worker''s schedule read); written with every run, kept however opsmeter.job_runs is trimmed';
SELECT pg_catalog.pg_extension_config_dump('opsmeter.job_state', '');

CREATE TABLE opsmeter.workers (
    name          text PRIMARY KEY,
    handler       text NOT NULL,
    batch         integer NOT NULL CHECK (batch BETWEEN 1 AND 10000),
    every         interval NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    registered_by name NOT NULL DEFAULT CURRENT_USER
);
COMMENT ON TABLE opsmeter.workers IS 'opsmeter: queue workers registered with ops_worker_register(): a handler(opsmeter.operations) function (its regprocedure text) called per claimed operation, batch size and interval; each is a job of its name';
SELECT pg_catalog.pg_extension_config_dump('opsmeter.workers', '');

CREATE FUNCTION ops_worker_unregister(name text)
RETURNS boolean
LANGUAGE sql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH gone AS (DELETE FROM opsmeter.workers w WHERE w.name = $1 RETURNING w.name),
         state AS (DELETE FROM opsmeter.job_state s WHERE s.job IN (SELECT g.name FROM gone g))
    SELECT EXISTS (SELECT 1 FROM gone)
$fn$;

CREATE FUNCTION ops_workers()
RETURNS TABLE (name text, handler regprocedure, batch integer, every interval,
               registered_at timestamptz, registered_by name, last_run_at timestamptz,
               last_status text, consecutive_failures integer, last_message text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT w.name, pg_catalog.to_regprocedure(w.handler), w.batch, w.every, w.registered_at,
           w.registered_by, s.last_run_at, s.last_status, coalesce(s.consecutive_failures, 0),
           s.last_message
      FROM opsmeter.workers w LEFT JOIN opsmeter.job_state s ON s.job = w.name
     ORDER BY w.name
$fn$;
"#,
    name = "job_tables",
    requires = ["billing_tables"]
);

/// Runs a statement that writes (or calls a function that does) and returns its first column:
/// SPI runs it read-write, with a fresh snapshot, which a plain `Spi::get_one` does not
/// promise before this (sub)transaction has written anything.
pub(crate) fn write_one<T: FromDatum + IntoDatum>(
    sql: &str,
    args: &[DatumWithOid],
) -> Result<Option<T>, pgrx::spi::Error> {
    Spi::connect_mut(|c| c.update(sql, None, args)?.first().get_one::<T>())
}

/// The registered queue workers as (name, every in microseconds).
fn registered() -> Vec<(String, i64)> {
    Spi::connect(|c| {
        c.select(
            "SELECT w.name, (pg_catalog.date_part('epoch', w.every) * 1000000)::bigint
               FROM opsmeter.workers w ORDER BY w.name",
            None,
            &[],
        )?
        .map(|r| {
            Ok((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<i64>(2)?.unwrap_or(0),
            ))
        })
        .collect::<Result<Vec<_>, pgrx::spi::Error>>()
    })
    .unwrap_or_else(|e| pgrx::error!("opsmeter: could not read opsmeter.workers: {e}"))
}

/// What `opsmeter.job_state` knows of a job.
fn state_of(job: &str) -> State {
    Spi::connect(|c| {
        let rows = c.select(
            "SELECT s.last_run_at, s.last_status, s.last_ok_at, s.consecutive_failures
               FROM opsmeter.job_state s WHERE s.job = $1",
            None,
            &[job.into()],
        )?;
        let mut state = State::default();
        for r in rows {
            state = State {
                last_run_at: r.get::<TimestampWithTimeZone>(1)?.map(us),
                last_status: r.get::<String>(2)?.and_then(|s| Status::parse(&s)),
                last_ok_at: r.get::<TimestampWithTimeZone>(3)?.map(us),
                consecutive_failures: r.get::<i32>(4)?.unwrap_or(0),
            };
        }
        Ok::<_, pgrx::spi::Error>(state)
    })
    .unwrap_or_else(|e| pgrx::error!("opsmeter: could not read opsmeter.job_state: {e}"))
}

/// Every job's state and last message from `opsmeter.job_state`, in one read.
fn states() -> HashMap<String, (State, Option<String>)> {
    Spi::connect(|c| {
        c.select(
            "SELECT s.job, s.last_run_at, s.last_status, s.last_ok_at, s.consecutive_failures,
                    s.last_message
               FROM opsmeter.job_state s",
            None,
            &[],
        )?
        .map(|r| {
            let state = State {
                last_run_at: r.get::<TimestampWithTimeZone>(2)?.map(us),
                last_status: r.get::<String>(3)?.and_then(|s| Status::parse(&s)),
                last_ok_at: r.get::<TimestampWithTimeZone>(4)?.map(us),
                consecutive_failures: r.get::<i32>(5)?.unwrap_or(0),
            };
            Ok((
                r.get::<String>(1)?.unwrap_or_default(),
                (state, r.get::<String>(6)?),
            ))
        })
        .collect::<Result<HashMap<_, _>, pgrx::spi::Error>>()
    })
    .unwrap_or_else(|e| pgrx::error!("opsmeter: could not read opsmeter.job_state: {e}"))
}

/// Every job: the built-ins in run order, then the registered queue workers.
fn all_jobs() -> Vec<(String, Kind)> {
    let mut jobs: Vec<(String, Kind)> = jc::BUILTIN
        .iter()
        .map(|n| (n.to_string(), jc::builtin(n).expect("built-in")))
        .collect();
    jobs.extend(
        registered()
            .into_iter()
            .map(|(n, every_us)| (n, Kind::Queue { every_us })),
    );
    jobs
}

/// A `timestamptz` function of no arguments (`now`, `clock_timestamp`) in microseconds.
fn time_us(function: &str) -> i64 {
    Spi::get_one::<TimestampWithTimeZone>(&format!("SELECT pg_catalog.{function}()"))
        .ok()
        .flatten()
        .map(us)
        .unwrap_or_else(|| pgrx::error!("opsmeter: {function}() is NULL"))
}

/// The wall clock now (`clock_timestamp()`).
pub(crate) fn clock_us() -> i64 {
    time_us("clock_timestamp")
}

/// The transaction's time (`now()`).
pub(crate) fn now_us() -> i64 {
    time_us("now")
}

/// Who runs this: the background worker's type (`opsmeter worker`, `pg_cron`'s workers), or
/// the client's application_name, or `client backend`.
fn runner() -> String {
    // SAFETY: MyBgworkerEntry is this process's worker entry or NULL; bgw_type is a C string.
    let bgw = unsafe {
        let entry = pg_sys::MyBgworkerEntry;
        (!entry.is_null()).then(|| {
            std::ffi::CStr::from_ptr((*entry).bgw_type.as_ptr())
                .to_string_lossy()
                .into_owned()
        })
    };
    bgw.filter(|s| !s.is_empty()).unwrap_or_else(|| {
        Spi::get_one::<String>("SELECT pg_catalog.current_setting('application_name')")
            .ok()
            .flatten()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "client backend".into())
    })
}

/// Writes one run: a `job_runs` row (unless it is an idle queue-worker run), the job's new
/// state, and the trim of `job_runs` down to `opsmeter.job_runs_keep` rows.
#[allow(clippy::too_many_arguments)]
fn record(
    job: &str,
    started: i64,
    finished: i64,
    status: Status,
    rows: i64,
    message: &str,
    write_run: bool,
) {
    let state = state_of(job).after(started, status);
    let args: Vec<DatumWithOid> = vec![
        job.into(),
        tstz(started).into(),
        tstz(finished).into(),
        status.name().into(),
        rows.into(),
        message.into(),
        state.last_ok_at.map(tstz).into(),
        state.consecutive_failures.into(),
        runner().into(),
    ];
    // Runs of a job are serialized by its lock, so the state read above is the latest an ok or
    // error run can follow. A skipped run is not, and it must never wait: the run holding the
    // lock may hold the state row (and old job_runs rows it trims) until its transaction ends,
    // which may be a psql session's open BEGIN. So a skip updates the state row only if no one
    // holds it and only if it finished after the run recorded there, never touches last_ok_at
    // and consecutive_failures, and trims nothing; every trim skips rows another run holds.
    let state_sql = if status == Status::Skipped {
        "state AS (
            UPDATE opsmeter.job_state s
               SET last_run_at = $2, last_finished_at = $3, last_status = $4, last_rows = $5,
                   last_message = $6
              FROM (SELECT l.job FROM opsmeter.job_state l WHERE l.job = $1
                       FOR UPDATE SKIP LOCKED) l
             WHERE s.job = l.job AND s.last_finished_at <= $3)"
    } else {
        "state AS (
            INSERT INTO opsmeter.job_state AS s
                   (job, last_run_at, last_finished_at, last_status, last_ok_at,
                    consecutive_failures, last_rows, last_message)
            VALUES ($1, $2, $3, $4, $7, $8, $5, $6)
            ON CONFLICT (job) DO UPDATE
               SET last_ok_at = EXCLUDED.last_ok_at,
                   consecutive_failures = EXCLUDED.consecutive_failures,
                   last_run_at = CASE WHEN s.last_finished_at <= EXCLUDED.last_finished_at
                                      THEN EXCLUDED.last_run_at ELSE s.last_run_at END,
                   last_status = CASE WHEN s.last_finished_at <= EXCLUDED.last_finished_at
                                      THEN EXCLUDED.last_status ELSE s.last_status END,
                   last_rows = CASE WHEN s.last_finished_at <= EXCLUDED.last_finished_at
                                    THEN EXCLUDED.last_rows ELSE s.last_rows END,
                   last_message = CASE WHEN s.last_finished_at <= EXCLUDED.last_finished_at
                                       THEN EXCLUDED.last_message ELSE s.last_message END,
                   last_finished_at = GREATEST(s.last_finished_at, EXCLUDED.last_finished_at))"
    };
    let run = if write_run {
        "INSERT INTO opsmeter.job_runs (job, started_at, finished_at, status, rows, message, pid, runner)
         VALUES ($1, $2, $3, $4, $5, $6, pg_catalog.pg_backend_pid(), $9)
         RETURNING id"
    } else {
        "SELECT NULL::bigint AS id"
    };
    let max_id = write_one::<i64>(
        &format!(
            "WITH run AS ({run}), {state_sql}
             SELECT (SELECT pg_catalog.max(r.id) FROM run r)"
        ),
        &args,
    )
    .unwrap_or_else(|e| pgrx::error!("opsmeter: could not record the run of job {job}: {e}"));
    if status == Status::Skipped {
        return;
    }
    if let Some(cut) = max_id.and_then(|m| jc::trim_below(m, gucs::job_runs_keep())) {
        Spi::run_with_args(
            "DELETE FROM opsmeter.job_runs r
              WHERE r.id IN (SELECT o.id FROM opsmeter.job_runs o WHERE o.id < $1
                                FOR UPDATE SKIP LOCKED)",
            &[cut.into()],
        )
        .unwrap_or_else(|e| pgrx::error!("opsmeter: could not trim opsmeter.job_runs: {e}"));
    }
}

/// The pid holding a job's lock, if another session holds it.
fn lock_holder(job: &str) -> Option<i32> {
    Spi::get_one_with_args::<i32>(
        "SELECT l.pid FROM pg_catalog.pg_locks l
          WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
            AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
            AND l.classid = $1::bigint::oid
            AND l.objid = (pg_catalog.hashtext($2)::bigint & 4294967295)::oid
            AND l.pid <> pg_catalog.pg_backend_pid()
          LIMIT 1",
        &[(jc::JOB_LOCK_KEY as i64).into(), job.into()],
    )
    .ok()
    .flatten()
}

/// Runs one job under its lock and records the run; the JSON `ops_run_job` returns.
pub(crate) fn run(ext: &str, name: &str, kind: Kind) -> serde_json::Value {
    let attempt = clock_us();
    let key2 = Spi::get_one_with_args::<i32>("SELECT pg_catalog.hashtext($1)", &[name.into()])
        .ok()
        .flatten()
        .unwrap_or(0);
    let lock = JobLock::new(jc::JOB_LOCK_KEY, key2);
    let Some(held) = lock.try_session() else {
        let message = match lock_holder(name) {
            Some(pid) => format!("another run of {name} holds its lock (pid {pid})"),
            None => format!("another run of {name} holds its lock"),
        };
        let finished = clock_us();
        record(name, attempt, finished, Status::Skipped, 0, &message, true);
        return outcome(name, Status::Skipped, 0, &message, attempt, finished);
    };
    // a run starts once it holds the lock, so two runs' [started, finished] never overlap
    let started = clock_us();
    let result = subxact::run(|| body(ext, name, kind));
    held.hand_to_transaction();
    let (status, rows, message, write_run) = match result {
        Ok(done) => (
            Status::Ok,
            done.rows,
            done.message,
            done.rows > 0 || !done.idle,
        ),
        Err(e) if e.is_cancel() => e.raise(),
        Err(e) => {
            pgrx::warning!("opsmeter: job {name} failed: {}", e.message);
            (Status::Error, 0, e.message, true)
        }
    };
    let finished = clock_us();
    record(name, started, finished, status, rows, &message, write_run);
    outcome(name, status, rows, &message, started, finished)
}

/// A job's advisory lock, `(JOB_LOCK_KEY, hashtext(job))` in this database, taken through the
/// lock manager as `pg_try_advisory_lock` / `pg_advisory_xact_lock` do.
struct JobLock {
    tag: pg_sys::LOCKTAG,
}

/// The session-level hold of a [`JobLock`]; if the transaction aborts before
/// [`HeldLock::hand_to_transaction`], an abort callback releases it, so it never outlives the
/// run (a session lock is not released by an abort by itself).
struct HeldLock {
    tag: pg_sys::LOCKTAG,
    on_abort: pgrx::XactCallbackReceipt,
}

impl JobLock {
    fn new(key1: i32, key2: i32) -> JobLock {
        // SAFETY: reads this backend's database OID.
        let db = unsafe { pg_sys::MyDatabaseId };
        JobLock {
            // SET_LOCKTAG_INT32 of the two-key advisory lock functions
            tag: pg_sys::LOCKTAG {
                locktag_field1: db.to_u32(),
                locktag_field2: key1 as u32,
                locktag_field3: key2 as u32,
                locktag_field4: 2,
                locktag_type: pg_sys::LockTagType::LOCKTAG_ADVISORY as u8,
                locktag_lockmethodid: pg_sys::USER_LOCKMETHOD as u8,
            },
        }
    }

    /// Takes the lock at session level without waiting; None when another session holds it.
    fn try_session(&self) -> Option<HeldLock> {
        // SAFETY: a valid advisory lock tag; dontWait, so this never sleeps.
        let r = unsafe { pg_sys::LockAcquire(&self.tag, pg_sys::ExclusiveLock as i32, true, true) };
        if r == pg_sys::LockAcquireResult::LOCKACQUIRE_NOT_AVAIL {
            return None;
        }
        let tag = self.tag;
        let on_abort = pgrx::register_xact_callback(pgrx::PgXactCallbackEvent::Abort, move || {
            // SAFETY: releases the session hold taken above (noncritical cleanup at abort).
            unsafe { pg_sys::LockRelease(&tag, pg_sys::ExclusiveLock as i32, true) };
        });
        Some(HeldLock {
            tag: self.tag,
            on_abort,
        })
    }
}

impl HeldLock {
    /// Turns the session hold into a transaction-level one: released at commit or abort, so a
    /// second run cannot start before this run's rows are visible to it.
    fn hand_to_transaction(self) {
        // SAFETY: this backend holds the lock, so the transaction-level acquire is granted at
        // once; then the session hold goes. Neither call waits or checks for interrupts.
        unsafe {
            pg_sys::LockAcquire(&self.tag, pg_sys::ExclusiveLock as i32, false, false);
            pg_sys::LockRelease(&self.tag, pg_sys::ExclusiveLock as i32, true);
        }
        self.on_abort.unregister_callback();
    }
}

fn outcome(
    name: &str,
    status: Status,
    rows: i64,
    message: &str,
    started: i64,
    finished: i64,
) -> serde_json::Value {
    json!({
        "job": name,
        "status": status.name(),
        "rows": rows,
        "message": message,
        "duration_ms": (finished - started) as f64 / 1000.0,
    })
}

/// What a job did.
pub(crate) struct Done {
    pub rows: i64,
    pub message: String,
    /// A queue-worker run that found nothing to do (not written to `job_runs`).
    pub idle: bool,
}

impl Done {
    pub fn new(rows: i64, message: String) -> Done {
        Done {
            rows,
            message,
            idle: false,
        }
    }
}

fn body(ext: &str, name: &str, kind: Kind) -> Done {
    match kind {
        Kind::Rollup => {
            let rows = write_one::<i64>(&format!("SELECT {ext}.ops_rollup_catch_up()"), &[])
                .unwrap_or_else(|e| pgrx::error!("{e}"))
                .unwrap_or(0);
            Done::new(rows, format!("{rows} rollup rows written"))
        }
        Kind::DailyStats => daily_stats(ext),
        Kind::Partitions => partitions::create_ahead(ext),
        Kind::Retention => partitions::retention(),
        Kind::Queue { .. } => {
            let (done, failed) = worker_batch(ext, name);
            Done {
                rows: done,
                message: format!("{done} operations completed, {failed} failed"),
                idle: done == 0 && failed == 0,
            }
        }
    }
}

fn daily_stats(ext: &str) -> Done {
    let schedule = gucs::job_schedule();
    let latest = Spi::get_one::<pgrx::datum::Date>(
        "SELECT pg_catalog.max(d.date) FROM opsmeter.daily_stats d",
    )
    .unwrap_or_else(|e| pgrx::error!("{e}"))
    .map(|d| d.to_pg_epoch_days());
    let Some((from, to)) = jc::daily_catch_up(
        now_us(),
        schedule.daily_at_us,
        latest,
        gucs::daily_stats_catch_up(),
    ) else {
        return Done::new(0, "every due day is written".into());
    };
    let (a, b) = (crate::records::date(from), crate::records::date(to));
    let rows = write_one::<i32>(
        &format!("SELECT {ext}.ops_daily_stats_backfill($1, $2)"),
        &[a.into(), b.into()],
    )
    .unwrap_or_else(|e| pgrx::error!("{e}"))
    .unwrap_or(0);
    Done::new(
        rows as i64,
        format!("days {a} .. {b}: {rows} written (days without traffic write nothing)"),
    )
}

/// The kind of job `name` is (an `ERROR` naming the jobs when there is none).
pub(crate) fn resolve(name: &str) -> Kind {
    jc::resolve(name, &registered()).or_raise()
}

/// Runs one job now, in this session and transaction, unless another run of it holds its lock
/// (recorded as `skipped`). A failing job is recorded as `error` and reported as a WARNING; it
/// does not raise, so pg_cron's own log says `succeeded` and `opsmeter.job_runs` tells. Jobs:
/// `rollup`, `daily_stats`, `partitions`, `retention`, and every registered queue worker.
#[pg_extern(volatile, strict)]
#[search_path(pg_catalog, pg_temp)]
fn ops_run_job(name: &str) -> JsonB {
    let ext = ext_schema();
    let kind = resolve(name);
    JsonB(run(&ext, name, kind))
}

/// One batch of a queue worker: claim, call the handler per operation in a subtransaction,
/// fail the ones that raised, complete the rest in one compare-and-set. Returns (completed,
/// failed).
fn worker_batch(ext: &str, name: &str) -> (i64, i64) {
    let (handler, batch): (Option<String>, Option<i32>) = Spi::get_two_with_args(
        "SELECT w.handler, w.batch FROM opsmeter.workers w WHERE w.name = $1",
        &[name.into()],
    )
    .unwrap_or((None, None));
    let (Some(handler), Some(batch)) = (handler, batch) else {
        let known: Vec<String> = registered().into_iter().map(|(n, _)| n).collect();
        Err::<(), _>(JobError::UnknownWorker {
            name: name.to_string(),
            known: if known.is_empty() {
                "(none)".into()
            } else {
                known.join(", ")
            },
        })
        .or_raise();
        unreachable!()
    };
    // The handler is looked up by its signature each batch: a dropped function is an error.
    let (call, owner): (Option<String>, Option<pg_sys::Oid>) = Spi::get_two_with_args(
        "SELECT pg_catalog.format('%I.%I', n.nspname, p.proname), p.proowner
           FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
          WHERE p.oid = $1::pg_catalog.regprocedure",
        &[handler.as_str().into()],
    )
    .unwrap_or_else(|e| pgrx::error!("opsmeter: queue worker {name}: handler {handler}: {e}"));
    let (Some(call), Some(owner)) = (call, owner) else {
        pgrx::error!("opsmeter: queue worker {name}: handler {handler} is gone")
    };
    // The lease only matters to other claimers while this transaction is open, and they skip
    // the locked rows anyway; the completion below needs no token: this transaction holds them.
    // Each operation's row comes out as a datum copied out of SPI, so the handler gets it as
    // its argument without reading opsmeter.operations itself. The rows are read after the
    // claim, in a statement of their own, so they carry the lease the claim just wrote.
    let claimed: Vec<(String, pgrx::datum::Uuid, pg_sys::Datum, pg_sys::Oid)> =
        Spi::connect_mut(|c| {
            let leased: Vec<(String, pgrx::datum::Uuid)> = c
                .update(
                    &format!("SELECT op_id, lease_token FROM {ext}.ops_op_claim($1, '1 hour')"),
                    None,
                    &[batch.into()],
                )?
                .map(|r| {
                    Ok((
                        r.get::<String>(1)?.unwrap_or_default(),
                        r.get::<pgrx::datum::Uuid>(2)?
                            .unwrap_or_else(|| pgrx::datum::Uuid::from_bytes([0; 16])),
                    ))
                })
                .collect::<Result<_, pgrx::spi::Error>>()?;
            if leased.is_empty() {
                return Ok(Vec::new());
            }
            let token = leased[0].1;
            let ids: Vec<String> = leased.into_iter().map(|(id, _)| id).collect();
            let mut table = c.update(
                "SELECT o.op_id, o FROM opsmeter.operations o
                  WHERE o.op_id = ANY ($1)
                  ORDER BY o.\"timestamp\", o.op_id",
                None,
                &[ids.into()],
            )?;
            let oid = table.column_type_oid(2)?.value();
            let mut out = Vec::new();
            // the table's own accessors read the row the iteration stands on
            while table.next().is_some() {
                let op_id = table.get::<String>(1)?.unwrap_or_default();
                if let Some(d) = table.get_datum_by_ordinal(2)? {
                    // SAFETY: a composite datum of this SPI result, copied into the function
                    // call's memory context while SPI is still connected.
                    let copy = unsafe { pg_sys::SPI_datumTransfer(d, false, -1) };
                    out.push((op_id, token, copy, oid));
                }
            }
            Ok::<_, pgrx::spi::Error>(out)
        })
        .unwrap_or_else(|e| pgrx::error!("opsmeter: queue worker {name}: claim failed: {e}"));
    let handle = format!("SELECT {call}($1)");
    // Handlers run with the database's own search_path (its reset value: postgresql.conf,
    // ALTER DATABASE / ROLE), as pg_cron runs commands, not with opsmeter's pinned one; the
    // statements around them are schema-qualified. Restored after the batch.
    let pinned = write_one::<String>(
        "SELECT pg_catalog.current_setting('search_path'),
                pg_catalog.set_config('search_path',
                    (SELECT s.reset_val FROM pg_catalog.pg_settings s WHERE s.name = 'search_path'), true)",
        &[],
    )
    .unwrap_or_else(|e| pgrx::error!("opsmeter: {e}"))
    .unwrap_or_default();
    let lease = claimed.first().map(|c| c.1);
    let mut done: Vec<String> = Vec::with_capacity(claimed.len());
    let mut failed = 0i64;
    for (op_id, token, row, oid) in claimed {
        let outcome = subxact::run(|| {
            as_user(owner, || {
                // SAFETY: `row` is a live composite datum of type `oid`, copied above.
                let arg = unsafe { DatumWithOid::new(row, oid) };
                Spi::run_with_args(&handle, &[arg])
            })
        });
        match outcome {
            Ok(Ok(())) => done.push(op_id),
            Ok(Err(e)) => fail(ext, &op_id, &e.to_string(), token, &mut failed),
            Err(e) if e.is_cancel() => e.raise(),
            Err(e) => fail(ext, &op_id, &e.message, token, &mut failed),
        }
    }
    write_one::<String>(
        "SELECT pg_catalog.set_config('search_path', $1, true)",
        &[pinned.into()],
    )
    .unwrap_or_else(|e| pgrx::error!("opsmeter: {e}"));
    let completed = if done.is_empty() {
        0
    } else {
        write_one::<i32>(&format!("SELECT {ext}.ops_op_complete($1)"), &[done.into()])
            .unwrap_or_else(|e| pgrx::error!("opsmeter: queue worker {name}: complete failed: {e}"))
            .unwrap_or(0) as i64
    };
    // Every operation of the lease is completed or failed now, in this transaction: the lease's
    // row in opsmeter.leases tracks nothing any more.
    if let Some(token) = lease {
        Spi::run_with_args(
            "DELETE FROM opsmeter.leases WHERE lease_token = $1",
            &[token.into()],
        )
        .unwrap_or_else(|e| pgrx::error!("opsmeter: queue worker {name}: {e}"));
    }
    (completed, failed)
}

/// Runs `f` as role `user`, as a SECURITY DEFINER function runs as its owner: a handler runs
/// with its owner's privileges, never the caller's (the worker's are superuser's). When `f`
/// raises, the enclosing subtransaction's abort restores the caller's identity.
fn as_user<T>(user: pg_sys::Oid, f: impl FnOnce() -> T) -> T {
    let (mut saved, mut context) = (pg_sys::InvalidOid, 0);
    // SAFETY: reads and sets this backend's current user, as fmgr_security_definer does.
    unsafe {
        pg_sys::GetUserIdAndSecContext(&mut saved, &mut context);
        pg_sys::SetUserIdAndSecContext(user, context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32);
    }
    let value = f();
    // SAFETY: as above.
    unsafe { pg_sys::SetUserIdAndSecContext(saved, context) };
    value
}

fn fail(ext: &str, op_id: &str, message: &str, token: pgrx::datum::Uuid, failed: &mut i64) {
    Spi::run_with_args(
        &format!("SELECT {ext}.ops_op_fail($1, $2, $3)"),
        &[op_id.into(), message.into(), token.into()],
    )
    .unwrap_or_else(|e| pgrx::error!("opsmeter: could not record the failure of {op_id}: {e}"));
    *failed += 1;
}

/// Runs one batch of queue worker `name` in this session and transaction, without the job lock
/// (claims never hand out an operation twice, so batches may run side by side): claims up to
/// its batch, calls its handler on each operation in a subtransaction, completes those whose
/// handler returned (in this transaction, with the handler's own writes) and fails those whose
/// handler raised, with the error as the retry's message. Returns the number completed.
#[pg_extern(volatile, strict)]
#[search_path(pg_catalog, pg_temp)]
fn ops_worker_run(name: &str) -> i32 {
    let ext = ext_schema();
    let (done, _) = worker_batch(&ext, name);
    done as i32
}

/// Registers (or re-registers) a queue worker: `handler(op opsmeter.operations)` is called once
/// per claimed operation, `batch` at a time, every `every`; each worker is the job `name`.
/// Returns true when the name is new, false when an existing worker was replaced.
#[pg_extern(volatile, strict)]
#[search_path(pg_catalog, pg_temp)]
fn ops_worker_register(
    name: &str,
    handler: crate::types::Regprocedure,
    batch: default!(i32, 100),
    every: default!(Interval, "'1 second'"),
) -> bool {
    let every_us = interval_us(&every);
    jc::check_worker(name, batch, every_us).or_raise();
    let oid = handler.0;
    let (ok, signature): (Option<bool>, Option<String>) = Spi::get_two_with_args(
        "SELECT p.prokind = 'f' AND p.pronargs = 1
                AND p.proargtypes[0] = 'opsmeter.operations'::pg_catalog.regtype,
                p.oid::pg_catalog.regprocedure::text
           FROM pg_catalog.pg_proc p WHERE p.oid = $1",
        &[oid.into()],
    )
    .unwrap_or((None, None));
    if ok != Some(true) {
        Err::<(), _>(JobError::Argument {
            arg: "handler",
            accepted: "a function taking one argument of type opsmeter.operations",
            got: signature
                .clone()
                .unwrap_or_else(|| format!("oid {}", oid.to_u32())),
        })
        .or_raise();
    }
    write_one::<bool>(
        "INSERT INTO opsmeter.workers AS w (name, handler, batch, every)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (name) DO UPDATE
            SET handler = EXCLUDED.handler, batch = EXCLUDED.batch, every = EXCLUDED.every,
                registered_at = pg_catalog.now(), registered_by = CURRENT_USER
         RETURNING (xmax = 0)",
        &[name.into(), signature.into(), batch.into(), every.into()],
    )
    .unwrap_or_else(|e| pgrx::error!("opsmeter: could not register queue worker {name}: {e}"))
    .unwrap_or(false)
}

/// Microseconds of a fixed-length interval (months count 30 days, as PostgreSQL's epoch does).
fn interval_us(i: &Interval) -> i64 {
    (i.months() as i64 * 30 + i.days() as i64) * jc::USECS_PER_DAY + i.micros()
}

/// Every job with its last run, its next run as the worker schedules it, consecutive failures
/// and its lag: for `rollup` now minus the end of the latest rolled-up hour, for `daily_stats`
/// now minus the end of the latest written day, for a queue worker the age of the oldest
/// operation still to be done; NULL where it has no meaning.
#[pg_extern(stable)]
#[search_path(pg_catalog, pg_temp)]
#[allow(clippy::type_complexity)]
fn ops_health() -> TableIterator<
    'static,
    (
        name!(job, String),
        name!(last_status, Option<String>),
        name!(last_run_at, Option<TimestampWithTimeZone>),
        name!(last_ok_at, Option<TimestampWithTimeZone>),
        name!(next_run_at, TimestampWithTimeZone),
        name!(consecutive_failures, i32),
        name!(lag, Option<Interval>),
        name!(last_message, Option<String>),
    ),
> {
    let schedule = gucs::job_schedule();
    let now = now_us();
    let lag = |sql: &str| -> Option<Interval> {
        Spi::get_one::<Interval>(sql).unwrap_or_else(|e| pgrx::error!("opsmeter: {e}"))
    };
    let rollup_lag = lag(
        "SELECT pg_catalog.now() - (pg_catalog.max(h.bucket_start) + interval '1 hour')
           FROM opsmeter.metrics_hourly h",
    );
    let daily_lag = lag(
        "SELECT pg_catalog.now() - ((pg_catalog.max(d.date) + 1)::timestamp AT TIME ZONE 'UTC')
           FROM opsmeter.daily_stats d",
    );
    let queue_lag = lag("SELECT pg_catalog.now() - pg_catalog.min(o.\"timestamp\")
           FROM opsmeter.operations o
          WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' AND o.available_at < 'infinity'");
    let mut states = states();
    let rows: Vec<_> = all_jobs()
        .into_iter()
        .map(|(job, kind)| {
            let (st, message) = states.remove(&job).unwrap_or_default();
            let next = jc::next_run(kind, &st, &schedule, now);
            let job_lag = match kind {
                Kind::Rollup => rollup_lag,
                Kind::DailyStats => daily_lag,
                Kind::Queue { .. } => queue_lag,
                _ => None,
            };
            (
                job,
                st.last_status.map(|s| s.name().to_string()),
                st.last_run_at.map(tstz),
                st.last_ok_at.map(tstz),
                tstz(next),
                st.consecutive_failures,
                job_lag,
                message,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// What the worker's tick needs: the jobs due now (in run order, each with how long to leave
/// it alone if it is skipped) and the time of the next one.
pub(crate) fn due_jobs() -> (Vec<(String, i64)>, i64) {
    let schedule = gucs::job_schedule();
    let now = clock_us();
    let states = states();
    let mut due = Vec::new();
    let mut next = i64::MAX;
    for (job, kind) in all_jobs() {
        let state = states.get(&job).map(|(st, _)| *st).unwrap_or_default();
        let at = jc::next_run(kind, &state, &schedule, now);
        if at <= now {
            due.push((job, jc::retry_wait(kind, &schedule)));
        } else {
            next = next.min(at);
        }
    }
    (due, next)
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use crate::cores::jobs::JOB_LOCK_KEY;
    use pgrx::prelude::*;

    fn one<T: FromDatum + IntoDatum>(sql: &str) -> Option<T> {
        Spi::get_one::<T>(sql).unwrap()
    }

    /// A subtransaction keeps what a returning closure wrote and rolls back what a raising one
    /// wrote, and the caller's transaction goes on after both.
    #[pg_test]
    fn a_subtransaction_keeps_a_success_and_rolls_back_a_failure() {
        Spi::run("CREATE TEMP TABLE sx (n int)").unwrap();
        let ok = crate::subxact::run(|| Spi::run("INSERT INTO sx VALUES (1)").unwrap());
        assert!(ok.is_ok());
        let failed = crate::subxact::run(|| {
            Spi::run("INSERT INTO sx VALUES (2)").unwrap();
            Spi::run("SELECT 1 / 0").unwrap();
        });
        let caught = failed.unwrap_err();
        assert_eq!(caught.code, PgSqlErrorCode::ERRCODE_DIVISION_BY_ZERO);
        assert!(!caught.is_cancel());
        Spi::run("INSERT INTO sx VALUES (3)").unwrap();
        assert_eq!(
            one::<String>("SELECT string_agg(n::text, ',' ORDER BY n) FROM sx"),
            Some("1,3".into())
        );
    }

    /// A run ends holding its job's lock at transaction level only: the session hold is gone
    /// (so it cannot leak), the transaction lock keeps a second run out until commit.
    #[pg_test]
    fn a_run_hands_its_lock_to_the_transaction() {
        let r = one::<pgrx::JsonB>("SELECT ops_run_job('retention')")
            .unwrap()
            .0;
        assert_eq!(r["status"], "ok");
        let held = format!(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()
                AND classid = {JOB_LOCK_KEY}::bigint::oid AND objsubid = 2
                AND objid = (hashtext('retention')::bigint & 4294967295)::oid"
        );
        assert_eq!(one::<i64>(&held), Some(1));
        // no session-level hold is left to release (pg_advisory_unlock warns and says false)
        Spi::run("SET LOCAL client_min_messages = error").unwrap();
        assert_eq!(
            one::<bool>(&format!(
                "SELECT pg_advisory_unlock({JOB_LOCK_KEY}, hashtext('retention'))"
            )),
            Some(false)
        );
        assert_eq!(one::<i64>(&held), Some(1));
    }

    /// A run inside a subtransaction that rolls back afterwards leaves no lock behind: its
    /// session hold was handed over, and the transaction-level hold went with the rollback.
    #[pg_test]
    fn a_run_in_a_rolled_back_subtransaction_leaves_no_lock() {
        let r = crate::subxact::run(|| {
            one::<pgrx::JsonB>("SELECT ops_run_job('partitions')");
            Spi::run("SELECT 1 / 0").unwrap();
        });
        assert!(r.is_err());
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()
                    AND classid = {JOB_LOCK_KEY}::bigint::oid"
            )),
            Some(0)
        );
    }

    /// A handler's writes and its operation's completion commit together: when the batch's
    /// transaction rolls back, neither stays.
    #[pg_test]
    fn a_handler_effect_and_its_completion_share_the_transaction() {
        Spi::run(
            "CREATE TABLE hx (op_id text PRIMARY KEY);
             CREATE FUNCTION hx_handle(op opsmeter.operations) RETURNS void LANGUAGE sql
                 AS $$ INSERT INTO public.hx VALUES (op.op_id) $$;
             SELECT ops_worker_register('hx', 'hx_handle(opsmeter.operations)'::regprocedure, 10);
             SELECT ops_op_save('{\"op_id\": \"hx-1\", \"timestamp\": \"2026-11-30T00:00:00Z\"}')",
        )
        .unwrap();
        let rolled_back = crate::subxact::run(|| {
            let n = one::<i32>("SELECT ops_worker_run('hx')");
            assert_eq!(n, Some(1));
            assert_eq!(one::<i64>("SELECT count(*) FROM hx"), Some(1));
            Spi::run("SELECT 1 / 0").unwrap();
        });
        assert!(rolled_back.is_err());
        assert_eq!(one::<i64>("SELECT count(*) FROM hx"), Some(0));
        assert_eq!(
            one::<String>("SELECT trustlog_status FROM opsmeter.operations WHERE op_id = 'hx-1'"),
            Some("NOT_TRUSTLOGGED".into())
        );
        assert_eq!(one::<i32>("SELECT ops_worker_run('hx')"), Some(1));
        assert_eq!(
            one::<String>("SELECT trustlog_status FROM opsmeter.operations WHERE op_id = 'hx-1'"),
            Some("TRUSTLOGGED".into())
        );
        assert_eq!(one::<i64>("SELECT count(*) FROM hx"), Some(1));
    }
}
