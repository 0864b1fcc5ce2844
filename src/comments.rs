//! `COMMENT ON` for every public function, in one place so the catalog test in
//! `pgrx-tests/catalog.rs` can insist nothing is left undocumented.

use pgrx::prelude::*;

extension_sql!(
    r#"
COMMENT ON FUNCTION opsmeter_version() IS 'opsmeter: version of the loaded opsmeter library';
COMMENT ON FUNCTION ops_set_source(text, regclass) IS 'opsmeter: point a source role (groups, usage_logs, error_logs, log_records) at a table or view, checking the columns the role needs';
COMMENT ON FUNCTION ops_reset_source(text) IS 'opsmeter: point a source role back at the extension''s own table opsmeter.<role>';
COMMENT ON FUNCTION ops_sources() IS 'opsmeter: every source role, the relation serving it, whether it is the default, and whether it passes its checks now';
"#,
    name = "comments",
    finalize
);
