-- opsmeter 0.10.0 -> 0.11.0: the aggregates ops_sketch_pair_a(a, b) / ops_sketch_pair_b(a, b),
-- ops_sketch(a) and ops_sketch(b) (the same bytes) from one transition state that PostgreSQL
-- shares between the two calls; ops_upsert_hourly and ops_metrics use them once this script has
-- run (before, a 0.11.0 library runs them with two ops_sketch calls: the same rows). Nothing
-- else changes: tables, the stored ops_sketch encoding and every other signature are as in 0.10.0.
\echo Use "ALTER EXTENSION opsmeter UPDATE TO '0.11.0'" to load this file. \quit

CREATE FUNCTION ops_sketch_pair_trans(bytea, float8, float8) RETURNS bytea
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ops_sketch_pair_trans';
CREATE FUNCTION ops_sketch_pair_combine(bytea, bytea) RETURNS bytea
    IMMUTABLE PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ops_sketch_pair_combine';
CREATE FUNCTION ops_sketch_pair_final_a(bytea) RETURNS ops_sketch
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ops_sketch_pair_final_a';
CREATE FUNCTION ops_sketch_pair_final_b(bytea) RETURNS ops_sketch
    IMMUTABLE STRICT PARALLEL SAFE LANGUAGE c AS 'MODULE_PATHNAME', 'ops_sketch_pair_final_b';
CREATE AGGREGATE ops_sketch_pair_a(a float8, b float8) (
    SFUNC = ops_sketch_pair_trans, STYPE = bytea, SSPACE = 16384,
    COMBINEFUNC = ops_sketch_pair_combine, FINALFUNC = ops_sketch_pair_final_a,
    FINALFUNC_MODIFY = READ_ONLY, PARALLEL = SAFE
);
CREATE AGGREGATE ops_sketch_pair_b(a float8, b float8) (
    SFUNC = ops_sketch_pair_trans, STYPE = bytea, SSPACE = 16384,
    COMBINEFUNC = ops_sketch_pair_combine, FINALFUNC = ops_sketch_pair_final_b,
    FINALFUNC_MODIFY = READ_ONLY, PARALLEL = SAFE
);
COMMENT ON FUNCTION ops_sketch_pair_trans(bytea, float8, float8) IS 'opsmeter: aggregate support for ops_sketch_pair_a/_b: adds one row''s two values (a NULL skipped on its side), in place inside an aggregate';
COMMENT ON FUNCTION ops_sketch_pair_combine(bytea, bytea) IS 'opsmeter: aggregate support for ops_sketch_pair_a/_b: merges the second pair state into the first, side by side (exact)';
COMMENT ON FUNCTION ops_sketch_pair_final_a(bytea) IS 'opsmeter: aggregate support: the first side of a pair state as an ops_sketch (NULL when it has no value)';
COMMENT ON FUNCTION ops_sketch_pair_final_b(bytea) IS 'opsmeter: aggregate support: the second side of a pair state as an ops_sketch (NULL when it has no value)';
COMMENT ON AGGREGATE ops_sketch_pair_a(float8, float8) IS 'opsmeter: ops_sketch(a), the same bytes, computed in one state with ops_sketch_pair_b(a, b) when a query calls both on the same arguments (one state per group instead of two)';
COMMENT ON AGGREGATE ops_sketch_pair_b(float8, float8) IS 'opsmeter: ops_sketch(b), the same bytes, computed in one state with ops_sketch_pair_a(a, b) when a query calls both on the same arguments';
