//! Reporting core errors to PostgreSQL: each domain error type says which SQLSTATE it raises
//! and which hint it carries; [`OrRaise::or_raise`] turns a core `Result` into a value or an
//! `ERROR`. An `ERROR` aborts the statement, so a failing call changes nothing.

use crate::cores::sources::SourceError;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// A core error that knows how PostgreSQL should see it.
pub trait SqlError: std::fmt::Display {
    fn sqlstate(&self) -> PgSqlErrorCode;
    fn hint(&self) -> Option<String> {
        None
    }
}

/// Raises `err` as an `ERROR` with its SQLSTATE and hint. Never returns.
pub fn raise(err: &dyn SqlError, funcname: &'static str) -> ! {
    let mut report = ErrorReport::new(err.sqlstate(), err.to_string(), funcname);
    if let Some(hint) = err.hint() {
        report = report.set_hint(hint);
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("an ERROR report does not return")
}

pub trait OrRaise<T> {
    /// The value, or an `ERROR` built from the core error.
    fn or_raise(self) -> T;
}

impl<T, E: SqlError> OrRaise<T> for Result<T, E> {
    fn or_raise(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => raise(&e, "opsmeter"),
        }
    }
}

impl SqlError for SourceError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            SourceError::UnknownRole(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            SourceError::WrongRelkind { .. } => ERRCODE_WRONG_OBJECT_TYPE,
            SourceError::MissingColumn { .. } => ERRCODE_UNDEFINED_COLUMN,
            SourceError::WrongType { .. } => ERRCODE_DATATYPE_MISMATCH,
            SourceError::Dangling { .. } => ERRCODE_UNDEFINED_TABLE,
            SourceError::NoSelectPrivilege { .. } => ERRCODE_INSUFFICIENT_PRIVILEGE,
        }
    }
    fn hint(&self) -> Option<String> {
        SourceError::hint(self)
    }
}
