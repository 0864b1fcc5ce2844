//! Cross-cutting `#[pg_test]`s: properties of the whole installed extension rather than of
//! one capability, plus helpers the per-module tests share. Included into the crate from
//! `src/lib.rs` under `cfg(test/pg_test)`.

mod catalog;

use pgrx::prelude::*;

/// Runs one PL/pgSQL statement in a subtransaction and returns the SQLSTATE it failed with, or
/// `"00000"` when it succeeded. The subtransaction is rolled back either way.
pub fn sqlstate_of(stmt: &str) -> String {
    Spi::get_one::<String>(&format!(
        "DO $opsmeter_test$ BEGIN
             PERFORM set_config('opsmeter_test.state', '00000', true);
             BEGIN {stmt}; RAISE EXCEPTION USING ERRCODE = 'OPSOK';
             EXCEPTION WHEN OTHERS THEN
                 IF SQLSTATE <> 'OPSOK' THEN
                     PERFORM set_config('opsmeter_test.state', SQLSTATE, true);
                 END IF;
             END;
         END $opsmeter_test$;
         SELECT current_setting('opsmeter_test.state')"
    ))
    .expect("sqlstate_of: SPI failed")
    .unwrap_or_default()
}

/// The message of the error `stmt` raises, or an empty string.
pub fn message_of(stmt: &str) -> String {
    Spi::get_one::<String>(&format!(
        "DO $opsmeter_test$ BEGIN
             PERFORM set_config('opsmeter_test.msg', '', true);
             BEGIN {stmt};
             EXCEPTION WHEN OTHERS THEN
                 PERFORM set_config('opsmeter_test.msg', SQLERRM, true);
             END;
         END $opsmeter_test$;
         SELECT current_setting('opsmeter_test.msg')"
    ))
    .expect("message_of: SPI failed")
    .unwrap_or_default()
}
