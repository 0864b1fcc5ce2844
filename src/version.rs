//! `opsmeter_version()`.

use pgrx::prelude::*;

/// The version of the loaded opsmeter library (the SQL objects' version is
/// `pg_extension.extversion`; the two differ only between a package upgrade and
/// `ALTER EXTENSION opsmeter UPDATE`).
#[pg_extern(stable, parallel_safe)]
fn opsmeter_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn library_and_sql_versions_agree() {
        let v = Spi::get_one::<String>(
            "SELECT extversion::text FROM pg_extension WHERE extname = 'opsmeter'",
        )
        .unwrap();
        assert_eq!(v.as_deref(), Some(super::opsmeter_version()));
    }
}
