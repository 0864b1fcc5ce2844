//! Every `opsmeter.*` setting lives here: one doc-commented static per setting, one accessor
//! each, and [`init`] called from `_PG_init`.
//!
//! The `opsmeter.` prefix is reserved: once the library is loaded, `SET opsmeter.<typo>` is an
//! error instead of a silently ignored placeholder.

use pgrx::pg_sys;

/// Registers opsmeter's settings and reserves the `opsmeter` prefix.
pub fn init() {
    // SAFETY: called once from _PG_init in the postmaster or a backend; the string is static.
    unsafe { pg_sys::MarkGUCPrefixReserved(c"opsmeter".as_ptr()) };
}
