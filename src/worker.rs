//! The background worker (SPEC §7). With `shared_preload_libraries = 'opsmeter'` and
//! `opsmeter.database` set, the postmaster starts one worker that runs opsmeter's jobs in that
//! database by itself: each due job is one transaction calling `ops_run_job(name)`, the same
//! code path pg_cron and psql use, so its advisory lock keeps them from running a job twice.
//!
//! * SIGTERM (`pg_terminate_backend`, `pg_ctl stop`) uses PostgreSQL's own handler: a running
//!   statement is cancelled at its next interrupt check, the job's transaction rolls back and
//!   the worker exits; the postmaster restarts it after [`RESTART`] unless it is shutting down.
//! * SIGHUP re-reads the configuration before the next tick.
//! * It waits (one LOG line) while the database lacks `CREATE EXTENSION opsmeter`, or has a
//!   different version than the loaded library (after an upgrade of the package, until
//!   `ALTER EXTENSION opsmeter UPDATE`).

use crate::jobs;
use crate::rollups::ext_schema;
use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long after a crash or `pg_terminate_backend` the postmaster starts the worker again.
pub const RESTART: Duration = Duration::from_secs(5);
/// The longest sleep between ticks: a newly registered queue worker is seen within it.
const MAX_NAP: Duration = Duration::from_secs(5);
/// How often the worker looks again for the extension while it waits for it.
const WAIT_NAP: Duration = Duration::from_secs(5);
/// The worker's `pg_stat_activity.backend_type` and `opsmeter.job_runs.runner`.
pub const WORKER_TYPE: &str = "opsmeter worker";

/// Registers the worker with the postmaster; called from `_PG_init` while preloading.
pub fn register() {
    let Some(db) = crate::gucs::worker_database() else {
        pgrx::log!(
            "opsmeter: opsmeter.database is not set, so no opsmeter background worker starts; jobs run only when called (ops_run_job, pg_cron)"
        );
        return;
    };
    BackgroundWorkerBuilder::new(&format!("{WORKER_TYPE} for database {db}"))
        .set_type(WORKER_TYPE)
        .set_library("opsmeter")
        .set_function("opsmeter_worker_main")
        .enable_spi_access()
        .set_restart_time(Some(RESTART))
        .load();
}

enum Tick {
    /// Jobs due now, and microseconds until the next one is due.
    Run {
        ext: String,
        due: Vec<(String, i64)>,
        nap_us: i64,
    },
    /// The extension is missing or at another version: why.
    Wait(String),
}

fn tick() -> Tick {
    let installed = Spi::get_one::<String>(
        "SELECT e.extversion::text FROM pg_catalog.pg_extension e WHERE e.extname = 'opsmeter'",
    )
    .ok()
    .flatten();
    let library = env!("CARGO_PKG_VERSION");
    match installed {
        None => Tick::Wait(
            "extension opsmeter is not installed in this database; waiting for CREATE EXTENSION opsmeter"
                .to_string(),
        ),
        Some(v) if v != library => Tick::Wait(format!(
            "extension opsmeter is at version {v} here but the library is {library}; waiting for ALTER EXTENSION opsmeter UPDATE"
        )),
        Some(_) => {
            let (due, next) = jobs::due_jobs();
            let now = jobs::clock_us();
            Tick::Run {
                ext: ext_schema(),
                due,
                nap_us: next.saturating_sub(now),
            }
        }
    }
}

extern "C-unwind" {
    /// PostgreSQL's backend SIGTERM handler (`die` in tcop/postgres.c), as a signal handler.
    fn die(postgres_signal_arg: core::ffi::c_int);
}

/// Runs `f` in a transaction of its own; an ERROR aborts that transaction and comes back as
/// its message, so one failing transaction never ends the worker (a FATAL still does).
fn in_transaction<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let f = std::panic::AssertUnwindSafe(f);
    PgTryBuilder::new(move || {
        Ok(BackgroundWorker::transaction(std::panic::AssertUnwindSafe(
            f,
        )))
    })
    .catch_others(|e| {
        let message = crate::subxact::Caught::from(&e).message;
        // SAFETY: the error left the transaction begun by BackgroundWorker::transaction
        // open; pgrx has already copied and flushed the error state.
        unsafe { pg_sys::AbortCurrentTransaction() };
        Err(message)
    })
    .execute()
}

/// What `pg_stat_activity` shows for the worker (state and query): the job it runs.
fn report(state: pg_sys::BackendState::Type, what: &str) {
    let what = std::ffi::CString::new(what).unwrap_or_default();
    // SAFETY: copies the string into this backend's status entry.
    unsafe { pg_sys::pgstat_report_activity(state, what.as_ptr()) };
}

/// The worker's entry point (named by `set_function`).
///
/// # Safety
/// Called by the postmaster as a background worker's main function.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn opsmeter_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // PostgreSQL's SIGTERM handler instead of pgrx's flag-only one: it also interrupts a
    // running statement, so a long job does not hold up `pg_ctl stop` or pg_terminate_backend.
    // SAFETY: `die` is the standard backend SIGTERM handler; installed before any work.
    unsafe {
        pg_sys::pqsignal(pg_sys::SIGTERM as i32, Some(die));
    }
    let db = crate::gucs::worker_database().unwrap_or_default();
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    BackgroundWorker::transaction(|| {
        let _ =
            Spi::run("SELECT pg_catalog.set_config('application_name', 'opsmeter worker', false)");
    });
    pgrx::log!("opsmeter worker started in database {db}");
    let mut waiting: Option<String> = None;
    // jobs left alone until then: skipped (another session holds their lock and perhaps their
    // job_state row, which a skip does not wait for) or failed outside their subtransaction
    let mut hold_off: HashMap<String, Instant> = HashMap::new();
    loop {
        // a pending SIGTERM exits here, between transactions
        pg_sys::check_for_interrupts!();
        if BackgroundWorker::sighup_received() {
            // SAFETY: re-reads postgresql.conf as a backend does on SIGHUP, between transactions.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let tick = in_transaction(tick).unwrap_or_else(|e| {
            Tick::Wait(format!("could not read its schedule ({e}); trying again"))
        });
        let nap = match tick {
            Tick::Wait(why) => {
                if waiting.as_deref() != Some(why.as_str()) {
                    pgrx::log!("opsmeter worker: {why}");
                    waiting = Some(why);
                }
                WAIT_NAP
            }
            Tick::Run { ext, due, nap_us } => {
                if waiting.take().is_some() {
                    pgrx::log!("opsmeter worker: extension opsmeter found; running jobs");
                }
                let now = Instant::now();
                hold_off.retain(|_, until| *until > now);
                let due: Vec<(String, i64)> = due
                    .into_iter()
                    .filter(|(job, _)| !hold_off.contains_key(job))
                    .collect();
                let ran = !due.is_empty();
                for (job, wait_us) in due {
                    pg_sys::check_for_interrupts!();
                    let sql = format!("SELECT {ext}.ops_run_job($1)");
                    report(
                        pg_sys::BackendState::STATE_RUNNING,
                        &format!("opsmeter job {job}"),
                    );
                    let result = in_transaction(|| {
                        jobs::write_one::<pgrx::JsonB>(&sql, &[job.as_str().into()])
                            .map_err(|e| e.to_string())
                    });
                    report(pg_sys::BackendState::STATE_IDLE, "");
                    let backoff =
                        Instant::now() + Duration::from_micros(wait_us.max(10_000) as u64);
                    match result {
                        Ok(Ok(Some(pgrx::JsonB(v)))) => {
                            match v.get("status").and_then(|s| s.as_str()) {
                                Some("error") => pgrx::log!(
                                    "opsmeter worker: job {job} failed: {}",
                                    v.get("message").and_then(|m| m.as_str()).unwrap_or("")
                                ),
                                Some("skipped") => {
                                    hold_off.insert(job, backoff);
                                }
                                _ => {}
                            }
                        }
                        Ok(Ok(None)) => {}
                        Ok(Err(e)) | Err(e) => {
                            pgrx::log!("opsmeter worker: job {job} could not run: {e}");
                            hold_off.insert(job, backoff);
                        }
                    }
                }
                // after running jobs, look again at once: their next runs may be the nearest
                let nap_us = if ran { 0 } else { nap_us };
                Duration::from_micros(nap_us.clamp(10_000, MAX_NAP.as_micros() as i64) as u64)
            }
        };
        if !BackgroundWorker::wait_latch(Some(nap)) {
            // postmaster death (SIGTERM goes through `die` and the interrupt check above)
            break;
        }
    }
}
