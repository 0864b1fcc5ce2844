-- Exact oracle for opsmeter's daily stats (ops_daily_stats_run / ops_daily_stats_backfill /
-- ops_stats, seed: daily_stats_job), for regression and concurrency tests.
--
--   psql -d DB -f tests/oracle/daily_stats_oracle.sql   (re-runnable; needs CREATE EXTENSION opsmeter)
--   SELECT * FROM oracle.ds_day('2026-11-21');
--   SELECT * FROM oracle.ds_period('2026-11-15 00:00+00', now());
--   SELECT * FROM oracle.ds_days_diff('2026-11-10', '2026-11-21');   -- no rows = agrees
--   SELECT * FROM oracle.ds_stats_diff('last7d');                    -- no rows = agrees
--
-- Deliberately independent of the extension's code: plain SQL over the raw source rows, the
-- seed's own expressions (COUNT / SUM(CASE ...) / COALESCE(SUM(...), 0)), and a period computed
-- in one pass over the raw rows of [since, until) instead of per day.
--
-- Rules (the seed's, with the contract's fixes):
--   * A day is [day 00:00 UTC, day+1 00:00 UTC), whatever the session TimeZone.
--   * requests = count(*); success = status_code in [200, 400); failed = status_code >= 400 or
--     = 0; a NULL status_code counts in requests only (so does 1..199).
--   * tokens_in / tokens_out = COALESCE(sum, 0); latency_sum_ms = COALESCE(sum(latency_ms), 0)
--     rounded to bigint (summed as numeric, exact).
--   * top_models: a jsonb array of at most 10 {"model", "requests", "tokens"} objects, tokens =
--     COALESCE(sum(tokens_in), 0) + COALESCE(sum(tokens_out), 0), ordered by requests desc,
--     model asc; a NULL model_name is the model ''. '[]' when there are no rows.
--   * A day without source rows has no row (ds_day returns nothing).
-- The source defaults to opsmeter.log_records; pass another relation with the same columns (a
-- re-pointed source, which may hold NULLs) as src.

CREATE SCHEMA IF NOT EXISTS oracle;

-- Internal: the UTC bounds of a day.
CREATE OR REPLACE FUNCTION oracle.ds_day_start(day date) RETURNS timestamptz
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$ SELECT day::timestamp AT TIME ZONE 'UTC' $$;

-- Internal: every model of the source rows with created_at in [since, until), with requests and
-- tokens; ordered by requests desc, model asc.
CREATE OR REPLACE FUNCTION oracle.ds_models_between(since timestamptz, until timestamptz,
                                                    src regclass DEFAULT 'opsmeter.log_records')
RETURNS TABLE (model text, requests bigint, tokens bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $f$
BEGIN
    RETURN QUERY EXECUTE format($q$
        SELECT COALESCE(model_name, '')::text AS model,
               count(*) AS requests,
               (COALESCE(sum(tokens_in), 0) + COALESCE(sum(tokens_out), 0))::bigint AS tokens
          FROM %s
         WHERE created_at >= $1 AND created_at < $2
         GROUP BY 1
         ORDER BY 2 DESC, 1 ASC $q$, src) USING since, until;
END
$f$;

-- Internal: the stats of the source rows with created_at in [since, until); one row, zeros and
-- '[]' when there are none.
CREATE OR REPLACE FUNCTION oracle.ds_between(since timestamptz, until timestamptz,
                                             src regclass DEFAULT 'opsmeter.log_records')
RETURNS TABLE (requests bigint, success bigint, failed bigint, tokens_in bigint, tokens_out bigint,
               latency_sum_ms bigint, top_models jsonb)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp
AS $f$
BEGIN
    RETURN QUERY EXECUTE format($q$
        SELECT count(*),
               COALESCE(sum(CASE WHEN status_code >= 200 AND status_code < 400 THEN 1 ELSE 0 END), 0)::bigint,
               COALESCE(sum(CASE WHEN status_code >= 400 OR status_code = 0 THEN 1 ELSE 0 END), 0)::bigint,
               COALESCE(sum(tokens_in), 0)::bigint,
               COALESCE(sum(tokens_out), 0)::bigint,
               round(COALESCE(sum(latency_ms::numeric), 0))::bigint,
               (SELECT COALESCE(jsonb_agg(jsonb_build_object('model', m.model, 'requests', m.requests,
                                                             'tokens', m.tokens)
                                          ORDER BY m.requests DESC, m.model ASC), '[]'::jsonb)
                  FROM (SELECT * FROM oracle.ds_models_between($1, $2, %1$L)
                         ORDER BY requests DESC, model ASC LIMIT 10) m)
          FROM %1$s
         WHERE created_at >= $1 AND created_at < $2 $q$, src) USING since, until;
END
$f$;

-- One day's daily_stats row as ops_daily_stats_run must write it; no row for a day without
-- source rows.
CREATE OR REPLACE FUNCTION oracle.ds_day(day date, src regclass DEFAULT 'opsmeter.log_records')
RETURNS TABLE (date date, requests bigint, success bigint, failed bigint, tokens_in bigint,
               tokens_out bigint, latency_sum_ms bigint, top_models jsonb)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
SELECT day, b.*
  FROM oracle.ds_between(oracle.ds_day_start(day), oracle.ds_day_start(day + 1), src) b
 WHERE b.requests > 0
$$;
COMMENT ON FUNCTION oracle.ds_day(date, regclass) IS
    'test oracle: the daily_stats row of one UTC day computed from the raw source rows (none for a day without rows)';

-- Every model of one day, as daily_model_stats must hold them.
CREATE OR REPLACE FUNCTION oracle.ds_models(day date, src regclass DEFAULT 'opsmeter.log_records')
RETURNS TABLE (date date, model text, requests bigint, tokens bigint)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
SELECT day, m.* FROM oracle.ds_models_between(oracle.ds_day_start(day), oracle.ds_day_start(day + 1), src) m
$$;
COMMENT ON FUNCTION oracle.ds_models(date, regclass) IS
    'test oracle: the daily_model_stats rows of one UTC day computed from the raw source rows';

-- The totals and top 10 of [since, until), computed directly from the raw source rows in one
-- pass (no per-day rows), as ops_stats must report them.
CREATE OR REPLACE FUNCTION oracle.ds_period(since timestamptz, until timestamptz,
                                            src regclass DEFAULT 'opsmeter.log_records')
RETURNS TABLE (requests bigint, success bigint, failed bigint, tokens_in bigint, tokens_out bigint,
               latency_sum_ms bigint, avg_latency_ms double precision, top_models jsonb)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
SELECT b.requests, b.success, b.failed, b.tokens_in, b.tokens_out, b.latency_sum_ms,
       CASE WHEN b.requests > 0 THEN b.latency_sum_ms::double precision / b.requests END,
       b.top_models
  FROM oracle.ds_between(since, until, src) b
$$;
COMMENT ON FUNCTION oracle.ds_period(timestamptz, timestamptz, regclass) IS
    'test oracle: period totals and top 10 models of the raw source rows with created_at in [since, until)';

-- Mismatches between opsmeter.daily_stats / daily_model_stats and the oracle for the days of
-- [from_day, to_day] (inclusive): one row per wrong column, missing or extra row. No rows = agree.
CREATE OR REPLACE FUNCTION oracle.ds_days_diff(from_day date, to_day date,
                                               src regclass DEFAULT 'opsmeter.log_records')
RETURNS TABLE (day date, what text, ops text, oracle text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
WITH days AS (SELECT from_day + i AS day FROM generate_series(0, to_day - from_day) i),
     o AS (SELECT o.* FROM days, LATERAL oracle.ds_day(days.day, src) o),
     m AS (SELECT s.* FROM opsmeter.daily_stats s WHERE s.date BETWEEN from_day AND to_day),
     j AS (SELECT COALESCE(m.date, o.date) AS day, m, o FROM m FULL JOIN o ON m.date = o.date),
     cols AS (
        SELECT j.day, c.what, c.ops, c.oracle
          FROM j, LATERAL (VALUES
               ('row',            CASE WHEN (j.m) IS NULL THEN 'missing' ELSE 'present' END,
                                  CASE WHEN (j.o) IS NULL THEN 'missing' ELSE 'present' END),
               ('requests',       (j.m).requests::text,       (j.o).requests::text),
               ('success',        (j.m).success::text,        (j.o).success::text),
               ('failed',         (j.m).failed::text,         (j.o).failed::text),
               ('tokens_in',      (j.m).tokens_in::text,      (j.o).tokens_in::text),
               ('tokens_out',     (j.m).tokens_out::text,     (j.o).tokens_out::text),
               ('latency_sum_ms', (j.m).latency_sum_ms::text, (j.o).latency_sum_ms::text),
               ('top_models',     (j.m).top_models::text,     (j.o).top_models::text)) c(what, ops, oracle)
         WHERE (j.m) IS NOT NULL AND (j.o) IS NOT NULL AND c.what <> 'row'
            OR ((j.m) IS NULL OR (j.o) IS NULL) AND c.what = 'row'),
     -- top_models compared as jsonb (key order and number spelling do not matter)
     bad AS (
        SELECT cols.* FROM cols
         WHERE CASE WHEN cols.what = 'top_models' THEN cols.ops::jsonb IS DISTINCT FROM cols.oracle::jsonb
                    ELSE cols.ops IS DISTINCT FROM cols.oracle END),
     -- daily_model_stats: every model of every day that has a daily_stats row
     mo AS (SELECT x.* FROM m, LATERAL oracle.ds_models(m.date, src) x),
     mm AS (SELECT x.* FROM opsmeter.daily_model_stats x WHERE x.date BETWEEN from_day AND to_day),
     models AS (
        SELECT COALESCE(mm.date, mo.date) AS day, 'model ' || quote_literal(COALESCE(mm.model, mo.model)) AS what,
               CASE WHEN mm.date IS NULL THEN 'missing' ELSE format('requests %s tokens %s', mm.requests, mm.tokens) END AS ops,
               CASE WHEN mo.date IS NULL THEN 'missing' ELSE format('requests %s tokens %s', mo.requests, mo.tokens) END AS oracle
          FROM mm FULL JOIN mo ON mm.date = mo.date AND mm.model = mo.model
         WHERE mm.date IS NULL OR mo.date IS NULL OR mm.requests <> mo.requests OR mm.tokens <> mo.tokens)
SELECT * FROM bad
UNION ALL
SELECT * FROM models
ORDER BY 1, 2
$$;
COMMENT ON FUNCTION oracle.ds_days_diff(date, date, regclass) IS
    'test oracle: mismatches of daily_stats and daily_model_stats with the oracle for the days of [from_day, to_day]; no rows = agree';

-- Mismatches between ops_stats(period) and the oracle over the same [since, until): the bounds
-- the contract fixes for the period name, then every column. No rows = agree. (ops_stats is
-- resolved through the caller's search_path.)
CREATE OR REPLACE FUNCTION oracle.ds_stats_diff(period_name text, src regclass DEFAULT 'opsmeter.log_records')
RETURNS TABLE (what text, ops text, oracle text)
LANGUAGE plpgsql STABLE
AS $f$
DECLARE
    s record;
    o record;
    n bigint := 0;
    today date := (now() AT TIME ZONE 'UTC')::date;
    want_since timestamptz;
BEGIN
    want_since := oracle.ds_day_start(today - CASE period_name WHEN 'today' THEN 0 WHEN 'last7d' THEN 6
                                                               WHEN 'last30d' THEN 29 END);
    FOR s IN SELECT * FROM ops_stats(period_name) LOOP
        n := n + 1;
        SELECT * INTO o FROM oracle.ds_period(s.since, s.until, src);
        RETURN QUERY
        SELECT c.what, c.ops, c.oracle
          FROM (VALUES
               ('period',         s.period,                  period_name),
               ('since',          s.since::text,             want_since::text),
               ('until',          s.until::text,             now()::text),
               ('requests',       s.requests::text,          o.requests::text),
               ('success',        s.success::text,           o.success::text),
               ('failed',         s.failed::text,            o.failed::text),
               ('tokens_in',      s.tokens_in::text,         o.tokens_in::text),
               ('tokens_out',     s.tokens_out::text,        o.tokens_out::text),
               ('latency_sum_ms', s.latency_sum_ms::text,    o.latency_sum_ms::text)) c(what, ops, oracle)
         WHERE c.ops IS DISTINCT FROM c.oracle
        UNION ALL
        SELECT 'avg_latency_ms', s.avg_latency_ms::text, o.avg_latency_ms::text
         WHERE NOT COALESCE(abs(s.avg_latency_ms - o.avg_latency_ms) <= 1e-9 * abs(o.avg_latency_ms),
                            s.avg_latency_ms IS NULL AND o.avg_latency_ms IS NULL)
        UNION ALL
        SELECT 'top_models', s.top_models::text, o.top_models::text
         WHERE s.top_models IS DISTINCT FROM o.top_models;
    END LOOP;
    IF n <> 1 THEN
        RETURN QUERY SELECT 'rows', n::text, '1';
    END IF;
END
$f$;
COMMENT ON FUNCTION oracle.ds_stats_diff(text, regclass) IS
    'test oracle: mismatches of ops_stats(period) with the oracle over the same [since, until); no rows = agree';
