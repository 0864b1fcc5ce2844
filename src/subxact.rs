//! Running a piece of work in a subtransaction, as PL/pgSQL's `BEGIN ... EXCEPTION` block does:
//! its effects stay when it returns and are rolled back when it raises, and the caller's
//! transaction goes on either way. Jobs and queue handlers run through it, so one failing
//! job or operation never takes the others down with it.

use pgrx::pg_sys;
use pgrx::pg_sys::panic::CaughtError;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;
use std::panic::AssertUnwindSafe;

/// An error a subtransaction caught: its SQLSTATE and message.
#[derive(Debug, Clone)]
pub struct Caught {
    pub code: PgSqlErrorCode,
    pub message: String,
}

impl From<&CaughtError> for Caught {
    /// The SQLSTATE and message of an error pgrx caught (a PostgreSQL ERROR or a Rust panic).
    fn from(e: &CaughtError) -> Caught {
        let report = match e {
            CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => r,
            CaughtError::RustPanic { ereport, .. } => ereport,
        };
        Caught {
            code: report.sql_error_code(),
            message: report.message().to_string(),
        }
    }
}

impl Caught {
    /// A cancel (statement timeout, `pg_cancel_backend`) must still cancel the whole call.
    pub fn is_cancel(&self) -> bool {
        self.code == PgSqlErrorCode::ERRCODE_QUERY_CANCELED
    }

    /// Raises this error again in the caller's transaction.
    pub fn raise(&self) -> ! {
        pgrx::pg_sys::panic::ErrorReport::new(self.code, self.message.clone(), "opsmeter")
            .report(PgLogLevel::ERROR);
        unreachable!("an ERROR report does not return")
    }
}

/// Runs `f` in a subtransaction: committed into the caller's transaction when it returns,
/// rolled back (with everything it wrote) when it raises; the error is returned.
pub fn run<T>(f: impl FnOnce() -> T) -> Result<T, Caught> {
    // SAFETY: inside a transaction (every caller is a SQL function or a worker transaction);
    // the memory context and resource owner are restored on both paths, as PL/pgSQL does.
    let (context, owner) = unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
        (context, owner)
    };
    let f = AssertUnwindSafe(f);
    PgTryBuilder::new(move || {
        let value = f();
        // SAFETY: the subtransaction begun above is the current one.
        unsafe {
            pg_sys::ReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
        }
        Ok(value)
    })
    .catch_others(move |e| {
        let Caught { code, message } = Caught::from(&e);
        // SAFETY: the error left the subtransaction begun above current; pgrx has already
        // copied and flushed the error state.
        unsafe {
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
        }
        Err(Caught { code, message })
    })
    .execute()
}
