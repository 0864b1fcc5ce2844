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
 WHERE p.proname IN ('ops_sketch', 'ops_sketch_merge', 'ops_sketch_pair_a', 'ops_sketch_pair_b')
 ORDER BY 1::text;

-- ops_sketch_pair_a(a, b) / ops_sketch_pair_b(a, b): one shared state per group, the same bytes
-- as ops_sketch(a) / ops_sketch(b), NULLs skipped on their side (grp 2 has no b at all), in
-- serial and parallel plans, hashed and sorted.
CREATE TABLE pairs AS
SELECT grp, x, CASE WHEN grp = 2 THEN NULL WHEN grp = 3 THEN -x ELSE x * 0.37 + grp END AS y FROM lat;
INSERT INTO pairs SELECT 7, NULL, NULL;
CREATE VIEW pair_check AS
SELECT count(*) AS groups,
       bool_and(pa IS NOT DISTINCT FROM sa) AS a_equal,
       bool_and(pb IS NOT DISTINCT FROM sb) AS b_equal,
       count(*) FILTER (WHERE pb IS NULL) AS groups_without_b,
       count(*) FILTER (WHERE pa IS NULL) AS groups_without_a
  FROM (SELECT grp, ops_sketch_pair_a(x, y)::text AS pa, ops_sketch_pair_b(x, y)::text AS pb,
               ops_sketch(x)::text AS sa, ops_sketch(y)::text AS sb
          FROM pairs GROUP BY grp) t;
SET enable_sort = off;
SELECT * FROM pair_check;
SET enable_sort = on;
SET enable_hashagg = off;
SELECT * FROM pair_check;
SET max_parallel_workers_per_gather = 2;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
SET parallel_leader_participation = off;
EXPLAIN (COSTS OFF) SELECT ops_sketch_pair_a(x, y), ops_sketch_pair_b(x, y) FROM pairs;
SELECT ops_sketch_pair_a(x, y)::text = (SELECT ops_sketch(x)::text FROM pairs) AS parallel_a_equal,
       ops_sketch_pair_b(x, y)::text = (SELECT ops_sketch(y)::text FROM pairs) AS parallel_b_equal
  FROM pairs;
SELECT * FROM pair_check;
-- and per group the same bytes as the serial ops_sketch(x) stored above (pairs.x is lat.x)
SELECT bool_and(p.pa = sr.s) AS parallel_pairs_equal_serial, count(*) AS groups
  FROM (SELECT grp, ops_sketch_pair_a(x, y)::text AS pa FROM pairs WHERE grp < 6 GROUP BY grp) p
  JOIN serial_result sr USING (grp);
RESET ALL;
-- A hash aggregation that spills to disk (many groups, work_mem 64kB) gives the same bytes.
CREATE TABLE pair_spill (grp int, k bigint, equal bool);
DO $$
DECLARE plan json;
BEGIN
    SET LOCAL work_mem = '64kB';
    SET LOCAL hash_mem_multiplier = 1;
    SET LOCAL enable_sort = off;
    EXECUTE 'EXPLAIN (ANALYZE, FORMAT JSON, COSTS OFF, TIMING OFF)
             SELECT grp, round(x)::bigint % 500, ops_sketch_pair_a(x, y), ops_sketch_pair_b(x, y)
               FROM pairs GROUP BY 1, 2' INTO plan;
    IF (plan -> 0 -> 'Plan' ->> 'HashAgg Batches')::int <= 1 THEN
        RAISE EXCEPTION 'the aggregation did not spill: %', plan;
    END IF;
    INSERT INTO pair_spill
    SELECT p.grp, k, pa IS NOT DISTINCT FROM sa AND pb IS NOT DISTINCT FROM sb
      FROM (SELECT grp, round(x)::bigint % 500 AS k, ops_sketch_pair_a(x, y)::text AS pa,
                   ops_sketch_pair_b(x, y)::text AS pb FROM pairs GROUP BY 1, 2) p
      JOIN (SELECT grp, round(x)::bigint % 500 AS k, ops_sketch(x)::text AS sa, ops_sketch(y)::text AS sb
              FROM pairs GROUP BY 1, 2) s USING (grp, k);
END
$$;
SELECT count(*) > 1000 AS many_groups, bool_and(equal) AS spilled_equal FROM pair_spill;
-- The support functions called directly (outside an aggregate they copy, never modify, their
-- argument); no rows, or only NULLs, give NULL.
SELECT ops_sketch_pair_final_a(s)::text = ops_sketch(v)::text AS direct_a,
       ops_sketch_pair_final_b(s)::text = ops_sketch(v * 2)::text AS direct_b
  FROM (SELECT ops_sketch_pair_trans(ops_sketch_pair_trans(NULL, 1.5, 3), 2.5, 5) AS s) p,
       (VALUES (1.5::float8), (2.5)) v(v) GROUP BY s;
SELECT ops_sketch_pair_final_a(ops_sketch_pair_combine(NULL, ops_sketch_pair_trans(NULL, 4, NULL)))::text
     = ops_sketch(4)::text AS combined_from_null,
       ops_sketch_pair_final_b(ops_sketch_pair_trans(NULL, 4, NULL)) IS NULL AS empty_side_is_null;
-- Two partial states merged as a parallel leader merges them, the second one straight from its
-- counters and buffered rows: the sketches of all their values.
SELECT ops_sketch_pair_final_a(c)::text = (SELECT ops_sketch(v)::text FROM (VALUES (4::float8), (5), (6), (-7)) t(v)) AS combined_a,
       ops_sketch_pair_final_b(c)::text = (SELECT ops_sketch(v)::text FROM (VALUES (1::float8), (2), (3)) t(v)) AS combined_b
  FROM (SELECT ops_sketch_pair_combine(ops_sketch_pair_trans(ops_sketch_pair_trans(NULL, 4, 1), 5, NULL),
                                       ops_sketch_pair_trans(ops_sketch_pair_trans(NULL, 6, 2), -7, 3)) AS c) p;
SELECT ops_sketch_combine(ops_sketch_trans(ops_sketch_trans(NULL, 1.5), 0), ops_sketch_trans(NULL, -3.5))::text
     = (SELECT ops_sketch(v)::text FROM (VALUES (1.5::float8), (0), (-3.5)) t(v)) AS combined_single;
SELECT ops_sketch_combine(NULL, ops_sketch_trans(ops_sketch_trans(NULL, 2.5), 7))::text
     = (SELECT ops_sketch(v)::text FROM (VALUES (2.5::float8), (7)) t(v)) AS combined_single_from_null;
SELECT ops_sketch_pair_a(x, y) IS NULL AS no_rows FROM pairs WHERE false;
SELECT ops_sketch_pair_b(NULL::float8, NULL::float8) IS NULL AS only_nulls;
-- Errors: NaN/Infinity on either side (22023), a state that is not a pair state (22P03).
SELECT ops_sketch_pair_b(x, y) FROM (VALUES (1.0::float8, 2.0::float8), (3.0, 'NaN')) v(x, y);
SELECT ops_sketch_pair_a(x, y) FROM (VALUES (1.0::float8, 2.0::float8), ('Infinity', 4.0)) v(x, y);
SELECT ops_sketch_pair_final_a('\xd90100'::bytea);
SELECT ops_sketch_pair_combine(ops_sketch_pair_trans(NULL, 1, 1), '\x00'::bytea);
SELECT ops_sketch_pair_trans('\xd901000000000000'::bytea, 1, 1);
SELECT regress.err($$SELECT ops_sketch_pair_final_b('\xd90100'::bytea)$$);

-- Left for the pg_dump/restore check run by scripts/test.sh after pg_regress.
CREATE TABLE sketch_dump_check AS SELECT id, s FROM stored;
