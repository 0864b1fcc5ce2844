//! Catalog hygiene: what SPEC §0 promises about every object, checked on the installed
//! extension so a new function that forgets its comment or its search_path fails the build.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    /// Functions that run no SQL and so need no pinned search_path. Keep this list short and
    /// justified: each entry is pure computation on its arguments.
    const PURE: &[&str] = &[
        "opsmeter_version",
        "ops_sketch",
        "ops_sketch_in",
        "ops_sketch_out",
        "ops_sketch_recv",
        "ops_sketch_send",
        "ops_sketch_trans",
        "ops_sketch_combine",
        "ops_sketch_final",
        "ops_sketch_merge",
        "ops_sketch_alpha",
        "ops_sketch_pair_a",
        "ops_sketch_pair_b",
        "ops_sketch_pair_trans",
        "ops_sketch_pair_combine",
        "ops_sketch_pair_final_a",
        "ops_sketch_pair_final_b",
        "ops_quantile",
        "ops_quantiles",
        "ops_rank",
        "ops_count",
        "ops_sum",
        "ops_mean",
        "ops_min",
        "ops_max",
    ];

    fn list(sql: &str) -> Vec<String> {
        Spi::connect(|c| {
            let mut out = Vec::new();
            for r in c.select(sql, None, &[])? {
                out.push(r.get::<String>(1)?.unwrap_or_default());
            }
            Ok::<_, pgrx::spi::Error>(out)
        })
        .unwrap()
    }

    /// `d`: the extension's member objects, less the `tests` schema that the `pg_test` build
    /// itself adds to the extension.
    const MEMBERS: &str = "FROM (SELECT classid, objid FROM pg_depend
                WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
                  AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'opsmeter')
                  AND NOT (classid = 'pg_namespace'::regclass AND objid = 'tests'::regnamespace)
                  AND NOT (classid = 'pg_proc'::regclass AND
                           (SELECT pronamespace FROM pg_proc WHERE oid = objid) = 'tests'::regnamespace)
             ) d";

    #[pg_test]
    fn every_member_object_has_a_comment() {
        let missing = list(&format!(
            "SELECT pg_describe_object(d.classid, d.objid, 0) {MEMBERS}
              WHERE d.classid IN ('pg_proc'::regclass, 'pg_class'::regclass, 'pg_type'::regclass,
                                 'pg_namespace'::regclass)
               AND obj_description(d.objid, (SELECT relname FROM pg_class WHERE oid = d.classid)) IS NULL
               -- sequences and indexes are documented by the table they serve; array and
               -- composite row types by their element or table
               AND NOT (d.classid = 'pg_class'::regclass AND
                        (SELECT relkind FROM pg_class WHERE oid = d.objid) IN ('S', 'i'))
               AND NOT (d.classid = 'pg_type'::regclass AND
                        (SELECT typtype = 'c' OR typelem <> 0 FROM pg_type WHERE oid = d.objid))
             ORDER BY 1"
        ));
        assert!(
            missing.is_empty(),
            "objects without COMMENT ON: {missing:?}"
        );
    }

    #[pg_test]
    fn every_sql_running_function_pins_its_search_path() {
        let unpinned = list(&format!(
            "SELECT p.proname::text {MEMBERS}
               JOIN pg_proc p ON p.oid = d.objid AND d.classid = 'pg_proc'::regclass
              WHERE NOT coalesce(p.proconfig::text[] && ARRAY['search_path=pg_catalog, pg_temp'], false)
              ORDER BY 1"
        ));
        let unexpected: Vec<_> = unpinned
            .iter()
            .filter(|n| !PURE.contains(&n.as_str()))
            .collect();
        assert!(
            unexpected.is_empty(),
            "functions without pinned search_path: {unexpected:?}"
        );
    }

    #[pg_test]
    fn aggregates_have_real_transition_types_and_combine_functions() {
        // Citus pushes partial aggregation to shards only for a combine function and a
        // transition type that is not a pseudo-type (internal would ship every raw row).
        let bad = list(&format!(
            "SELECT a.aggfnoid::regprocedure::text {MEMBERS}
               JOIN pg_aggregate a ON a.aggfnoid = d.objid AND d.classid = 'pg_proc'::regclass
               JOIN pg_type t ON t.oid = a.aggtranstype
              WHERE t.typtype = 'p' OR a.aggcombinefn = 0
                 OR (SELECT proparallel FROM pg_proc WHERE oid = a.aggfnoid) <> 's'"
        ));
        assert!(bad.is_empty(), "{bad:?}");
        let n = Spi::get_one::<i64>(&format!(
            "SELECT count(*) {MEMBERS}
               JOIN pg_aggregate a ON a.aggfnoid = d.objid AND d.classid = 'pg_proc'::regclass"
        ))
        .unwrap();
        assert_eq!(
            n,
            Some(5),
            "ops_sketch(float8), ops_sketch(float8, float8), ops_sketch_merge, ops_sketch_pair_a, ops_sketch_pair_b"
        );
    }

    #[pg_test]
    fn tables_live_in_the_opsmeter_schema() {
        let elsewhere = list(&format!(
            "SELECT c.oid::regclass::text {MEMBERS}
               JOIN pg_class c ON c.oid = d.objid AND d.classid = 'pg_class'::regclass
              WHERE c.relkind IN ('r', 'p') AND c.relnamespace <> 'opsmeter'::regnamespace"
        ));
        assert!(elsewhere.is_empty(), "{elsewhere:?}");
        // And the four default source tables are there.
        let n = Spi::get_one::<i64>(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'opsmeter'::regnamespace
               AND relname IN ('groups', 'usage_logs', 'error_logs', 'log_records', 'sources')",
        )
        .unwrap();
        assert_eq!(n, Some(5));
    }

    #[pg_test]
    fn data_tables_are_kept_by_pg_dump() {
        // pg_dump dumps an extension table's rows only if it is registered as config. A
        // partitioned table holds no rows itself: its partitions are created at run time, are
        // not extension members, and pg_dump dumps them (and their rows) like any table, then
        // attaches them (the regress layer's dump/restore round trip checks this).
        let unregistered = list(
            "SELECT c.oid::regclass::text FROM pg_class c
              WHERE c.relnamespace = 'opsmeter'::regnamespace AND c.relkind IN ('r', 'S')
                AND NOT c.relispartition
                AND c.oid <> ALL (SELECT unnest(extconfig) FROM pg_extension
                                   WHERE extname = 'opsmeter')",
        );
        assert!(unregistered.is_empty(), "{unregistered:?}");
    }

    #[pg_test]
    fn the_opsmeter_settings_prefix_is_reserved() {
        // 42602 invalid_name: "invalid configuration parameter name", reserved prefix.
        assert_eq!(
            crate::pgrx_tests::sqlstate_of("SET opsmeter.no_such_setting = 1"),
            "42602"
        );
        // An unreserved prefix still takes placeholders, so the check above means something.
        assert_eq!(
            crate::pgrx_tests::sqlstate_of("SET other_ext.whatever = 1"),
            "00000"
        );
    }
}
