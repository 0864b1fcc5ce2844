-- ops_sketch: accuracy against percentile_disc, exact merge, NULL/NaN handling, text round trip,
-- parallel plans, and the errors.
CREATE TABLE lat (grp int, x float8);
-- 60 000 deterministic latencies (ms) in 6 groups: a skewed, heavy-tailed, tied mix.
INSERT INTO lat
SELECT i % 6, round((exp(5 + 2.2 * sin(i * 0.61) + 0.7 * cos(i * 1.37)) * (1 + (i % 5) * 0.3))::numeric, 1)::float8
  FROM generate_series(1, 60000) i;
INSERT INTO lat VALUES (0, NULL), (1, NULL);   -- NULLs are skipped

-- Every quantile within alpha (0.005) of percentile_disc, per group and overall.
WITH qs(q) AS (VALUES (0), (0.001), (0.01), (0.1), (0.25), (0.5), (0.75), (0.9), (0.95), (0.99), (0.999), (1)),
per AS (
    SELECT g.grp, qs.q,
           (SELECT ops_quantile(ops_sketch(x), qs.q) FROM lat WHERE grp IS NOT DISTINCT FROM g.grp OR g.grp IS NULL) AS est,
           (SELECT percentile_disc(qs.q) WITHIN GROUP (ORDER BY x) FROM lat WHERE grp IS NOT DISTINCT FROM g.grp OR g.grp IS NULL) AS exact
      FROM (SELECT DISTINCT grp FROM lat UNION ALL SELECT NULL) g, qs
)
SELECT count(*) AS checks,
       bool_and(abs(est - exact) <= 0.005 * abs(exact) * (1 + 1e-9)) AS all_within_alpha,
       max(abs(est - exact) / nullif(abs(exact), 0)) <= 0.005 AS max_rel_err_ok
  FROM per;

-- count, sum, min, max exact; q = 0 and q = 1 are exactly min and max.
SELECT ops_count(s) = (SELECT count(x) FROM lat) AS count_exact,
       ops_sum(s) = (SELECT sum(x::numeric)::float8 FROM lat) AS sum_exact,
       ops_min(s) = (SELECT min(x) FROM lat) AS min_exact,
       ops_max(s) = (SELECT max(x) FROM lat) AS max_exact,
       ops_quantile(s, 0) = ops_min(s) AS q0_is_min,
       ops_quantile(s, 1) = ops_max(s) AS q1_is_max,
       abs(ops_mean(s) - (SELECT avg(x::numeric)::float8 FROM lat)) < 1e-9 AS mean_exact
  FROM (SELECT ops_sketch(x) AS s FROM lat) t;

-- A constant input returns exactly that constant; zeros and negatives are fine.
SELECT ops_quantile(ops_sketch(v), 0.5) AS constant, ops_quantile(ops_sketch(v), 0.99) AS constant_p99
  FROM (SELECT 1234.5678::float8 AS v FROM generate_series(1, 1000)) c;
SELECT (SELECT array_agg(round(q::numeric, 3)) FROM unnest(ops_quantiles(ops_sketch(v), ARRAY[0, 0.25, 0.5, 0.75, 1, NULL])) q) AS mixed_signs
  FROM (VALUES (-100.0::float8), (-1), (0), (0), (1), (100), (1000)) m(v);
-- All-NULL input: no sketch.
SELECT ops_sketch(x) IS NULL AS all_null FROM (VALUES (NULL::float8), (NULL)) n(x);

-- Merging is exact: per-group sketches merged in any order equal the sketch of everything.
WITH parts AS (SELECT grp, ops_sketch(x) AS s FROM lat GROUP BY grp)
SELECT (SELECT ops_sketch(x) FROM lat)::text = (SELECT ops_sketch_merge(s ORDER BY grp) FROM parts)::text AS merge_asc,
       (SELECT ops_sketch(x) FROM lat)::text = (SELECT ops_sketch_merge(s ORDER BY grp DESC) FROM parts)::text AS merge_desc;

-- Text round trip, and a stored sketch.
CREATE TABLE stored (id int PRIMARY KEY, s ops_sketch);
INSERT INTO stored SELECT grp, ops_sketch(x) FROM lat GROUP BY grp;
SELECT bool_and(s::text::ops_sketch::text = s::text) AS text_round_trip,
       bool_and(length(s::text) < 6000) AS compact,
       bool_and(s::text LIKE 'ddsk1:%') AS prefixed
  FROM stored;
SELECT ops_quantile(ops_sketch_merge(s), 0.99) = (SELECT ops_quantile(ops_sketch(x), 0.99) FROM lat) AS stored_merge_p99
  FROM stored;
-- A small sketch's text form, stable across releases of format version 1.
SELECT ops_sketch(v)::text AS small_text FROM (VALUES (1.0::float8), (2.0), (2.0), (1000.0)) s(v);

-- SLO share: requests under 2 s, against the exact share.
SELECT abs(ops_rank(ops_sketch(x), 2000) - avg((x <= 2000)::int)) < 0.01 AS slo_share_close
  FROM lat;

-- Other alphas.
SELECT ops_sketch_alpha(ops_sketch(x, 0.01)) AS alpha, ops_count(ops_sketch(x, 0.0001)) AS n
  FROM lat;

-- Parallel and serial plans give byte-identical sketches.
SET max_parallel_workers_per_gather = 0;
CREATE TABLE serial_result AS SELECT grp, ops_sketch(x)::text AS s FROM lat GROUP BY grp;
CREATE TABLE serial_all AS SELECT ops_sketch(x)::text AS s FROM lat;
SET max_parallel_workers_per_gather = 2;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET parallel_leader_participation = off;
EXPLAIN (COSTS OFF) SELECT ops_sketch(x) FROM lat;
SELECT (SELECT ops_sketch(x)::text FROM lat) = (SELECT s FROM serial_all) AS parallel_equals_serial;
SELECT bool_and(p.s = sr.s) AS per_group_equal, count(*) AS groups
  FROM (SELECT grp, ops_sketch(x)::text AS s FROM lat GROUP BY grp) p JOIN serial_result sr USING (grp);
RESET ALL;

-- Errors: NaN/Infinity (22023, naming the value), alpha out of range, merging different alphas,
-- q outside [0, 1], malformed text (22P02), a corrupted payload (22P03).
SELECT ops_sketch(x) FROM (VALUES (1.0::float8), ('NaN')) v(x);
SELECT ops_sketch(x) FROM (VALUES (1.0::float8), ('-Infinity')) v(x);
SELECT ops_sketch(1.0, 0.5);
SELECT ops_sketch(1.0, 0.00001);
SELECT ops_sketch_merge(s) FROM (VALUES ((SELECT ops_sketch(1.0, 0.01))), ((SELECT ops_sketch(2.0, 0.02)))) v(s);
SELECT ops_quantile(ops_sketch(1.0), 1.5);
SELECT ops_quantile(ops_sketch(1.0), 'NaN');
SELECT 'not a sketch'::ops_sketch;
SELECT 'ddsk1:!!!!'::ops_sketch;
SELECT 'ddsk1:AQ=='::ops_sketch;
SELECT 'ddsk1:CQAAAAAAAAAA'::ops_sketch;
SELECT regress.err($$SELECT 'ddsk1:AQ=='::ops_sketch$$);
SELECT regress.err($$SELECT ops_sketch(1.0, 0.5)$$);
SELECT regress.err($$SELECT 'x'::ops_sketch$$);
-- Failing aggregate left nothing behind.
SELECT count(*) AS stored_rows FROM stored;

-- The transition type is a real type (not internal), so Citus can push partial aggregation down.
SELECT a.aggfnoid::regprocedure AS aggregate, a.aggtranstype::regtype AS stype,
       a.aggcombinefn <> 0 AS has_combine, t.typtype
  FROM pg_aggregate a JOIN pg_type t ON t.oid = a.aggtranstype JOIN pg_proc p ON p.oid = a.aggfnoid
 WHERE p.proname IN ('ops_sketch', 'ops_sketch_merge')
 ORDER BY 1::text;

-- Left for the pg_dump/restore check run by scripts/test.sh after pg_regress.
CREATE TABLE sketch_dump_check AS SELECT id, s FROM stored;
