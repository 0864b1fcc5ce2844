-- Exact oracle for opsmeter's request-record store (0.4.0), for regression tests.
--
--   psql -d DB -f tests/oracle/records_oracle.sql      (re-runnable; needs the opsmeter tables)
--   SELECT * FROM oracle.rec_history('messages', '2026-11-10 00:00+00', 3600);
--   SELECT * FROM oracle.rec_model_history('messages', '2026-11-10 00:00+00', 86400, 'key-01', NULL);
--   SELECT * FROM oracle.rec_latest('messages');
--   SELECT * FROM oracle.rec_diff('messages', '2026-11-10 00:00+00', 3600, NULL, NULL, false);  -- mismatches only
--
-- Written from the contract alone, independent of the extension's code: plain GROUP BYs over
-- opsmeter.request_records with count/FILTER and percentile_disc, no sketches. Slow and obviously
-- right is the point; do not optimise it.
--
-- Rules:
--   * ops_history: records of the api_type with created_at >= since; metrics_key / base_url
--     equal when given, NULL or '' meaning all. bucket_start = to_timestamp(floor(epoch / iv) * iv)
--     (multiples of iv seconds since the Unix epoch, whatever the session TimeZone); only buckets
--     with records. failures = requests - successes; success_rate = 100 * successes / requests.
--   * Percentiles: exact percentile_disc(0.5 / 0.95 / 0.99) of the latency_ms of all the bucket's
--     records; opsmeter's sketch must be within 0.5% of them (plus 1e-9 for float noise).
--   * ops_model_history: the same per (bucket, model).
--   * ops_latest_timestamps: per metrics_key of the api_type, max(created_at) of its successes and
--     of its failures (NULL when none). Only valid while no record was removed by
--     ops_cleanup_records (record_latest remembers keys whose records were cleaned up).
-- Row order is not defined; callers ORDER BY (oracle.rec_diff checks opsmeter's order itself).

CREATE SCHEMA IF NOT EXISTS oracle;

-- Internal: the records a history call reads, with their bucket.
CREATE OR REPLACE FUNCTION oracle._rec_bucketed(api_type text, since timestamptz, iv bigint,
                                                key text, base_url text)
RETURNS TABLE (bucket_start timestamptz, model text, success boolean, latency_ms float8)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT to_timestamp((floor(extract(epoch FROM r.created_at) / $3) * $3)::float8),
       r.model, r.success, r.latency_ms
  FROM opsmeter.request_records r
 WHERE r.api_type = $1
   AND r.created_at >= $2
   AND (COALESCE($4, '') = '' OR r.metrics_key = $4)
   AND (COALESCE($5, '') = '' OR r.base_url = $5)
$$;

-- Exact ops_history.
CREATE OR REPLACE FUNCTION oracle.rec_history(api_type text, since timestamptz, iv bigint,
                                              key text DEFAULT NULL, base_url text DEFAULT NULL)
RETURNS TABLE (bucket_start timestamptz, requests bigint, successes bigint, failures bigint,
               success_rate float8, latency_p50_ms float8, latency_p95_ms float8, latency_p99_ms float8)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT b.bucket_start,
       count(*),
       count(*) FILTER (WHERE b.success),
       count(*) FILTER (WHERE NOT b.success),
       (100.0 * count(*) FILTER (WHERE b.success) / count(*))::float8,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY b.latency_ms),
       percentile_disc(0.95) WITHIN GROUP (ORDER BY b.latency_ms),
       percentile_disc(0.99) WITHIN GROUP (ORDER BY b.latency_ms)
  FROM oracle._rec_bucketed($1, $2, $3, $4, $5) b
 GROUP BY b.bucket_start
$$;
COMMENT ON FUNCTION oracle.rec_history(text, timestamptz, bigint, text, text) IS
    'test oracle: exact ops_history (buckets of iv seconds since the epoch, percentile_disc latencies)';

-- Exact ops_model_history.
CREATE OR REPLACE FUNCTION oracle.rec_model_history(api_type text, since timestamptz, iv bigint,
                                                    key text DEFAULT NULL, base_url text DEFAULT NULL)
RETURNS TABLE (bucket_start timestamptz, model text, requests bigint, successes bigint, failures bigint,
               success_rate float8, latency_p50_ms float8, latency_p95_ms float8, latency_p99_ms float8)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT b.bucket_start,
       b.model,
       count(*),
       count(*) FILTER (WHERE b.success),
       count(*) FILTER (WHERE NOT b.success),
       (100.0 * count(*) FILTER (WHERE b.success) / count(*))::float8,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY b.latency_ms),
       percentile_disc(0.95) WITHIN GROUP (ORDER BY b.latency_ms),
       percentile_disc(0.99) WITHIN GROUP (ORDER BY b.latency_ms)
  FROM oracle._rec_bucketed($1, $2, $3, $4, $5) b
 GROUP BY b.bucket_start, b.model
$$;
COMMENT ON FUNCTION oracle.rec_model_history(text, timestamptz, bigint, text, text) IS
    'test oracle: exact ops_model_history (per bucket and model)';

-- Exact ops_latest_timestamps, rescanning the records.
CREATE OR REPLACE FUNCTION oracle.rec_latest(api_type text)
RETURNS TABLE (metrics_key text, last_success_at timestamptz, last_failure_at timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT r.metrics_key,
       max(r.created_at) FILTER (WHERE r.success),
       max(r.created_at) FILTER (WHERE NOT r.success)
  FROM opsmeter.request_records r
 WHERE r.api_type = $1
 GROUP BY r.metrics_key
$$;
COMMENT ON FUNCTION oracle.rec_latest(text) IS
    'test oracle: exact ops_latest_timestamps from the records (valid until ops_cleanup_records removes some)';

-- percentile within 0.5% (plus float noise) of the exact one
CREATE OR REPLACE FUNCTION oracle.rec_within(ops float8, exact float8) RETURNS boolean
LANGUAGE sql IMMUTABLE AS
$$ SELECT ops IS NOT NULL AND exact IS NOT NULL AND abs(ops - exact) <= 0.005 * abs(exact) + 1e-9 $$;

-- oracle.rec_diff(api_type, since, iv, key, base_url, by_model): every way ops_history
-- (by_model false) or ops_model_history (true) disagrees with the oracle for these arguments;
-- no rows when they agree. One row per bad bucket (and model), kind is one of
--   missing      a bucket the oracle has and opsmeter does not
--   extra        a bucket opsmeter returned and the oracle does not have
--   duplicate    a bucket opsmeter returned more than once
--   order        opsmeter's row at this position is not in bucket_start (, model) order
--   counts       requests / successes / failures differ, or success_rate by more than 1e-9
--   percentiles  a latency percentile is not within 0.5% + 1e-9 of percentile_disc
-- The ops_* functions are called unqualified (the schema CREATE EXTENSION picked must be on the
-- search_path).
CREATE OR REPLACE FUNCTION oracle.rec_diff(api_type text, since timestamptz, iv bigint,
                                           key text, base_url text, by_model boolean)
RETURNS TABLE (kind text, bucket_start timestamptz, model text,
               ops_requests bigint, oracle_requests bigint, ops_successes bigint, oracle_successes bigint,
               ops_p50 float8, oracle_p50 float8, ops_p95 float8, oracle_p95 float8,
               ops_p99 float8, oracle_p99 float8)
LANGUAGE plpgsql STABLE AS $f$
DECLARE
    m_sql text;
    o_sql text;
BEGIN
    IF by_model THEN
        m_sql := 'SELECT h.bucket_start, h.model, h.requests, h.successes, h.failures, h.success_rate,
                         h.latency_p50_ms, h.latency_p95_ms, h.latency_p99_ms, h.ordinality AS n
                    FROM ops_model_history($1, $2, $3, $4, $5) WITH ORDINALITY AS h';
        o_sql := 'SELECT * FROM oracle.rec_model_history($1, $2, $3, $4, $5)';
    ELSE
        m_sql := 'SELECT h.bucket_start, NULL::text AS model, h.requests, h.successes, h.failures, h.success_rate,
                         h.latency_p50_ms, h.latency_p95_ms, h.latency_p99_ms, h.ordinality AS n
                    FROM ops_history($1, $2, $3, $4, $5) WITH ORDINALITY AS h';
        o_sql := 'SELECT o.bucket_start, NULL::text AS model, o.requests, o.successes, o.failures, o.success_rate,
                         o.latency_p50_ms, o.latency_p95_ms, o.latency_p99_ms
                    FROM oracle.rec_history($1, $2, $3, $4, $5) o';
    END IF;
    RETURN QUERY EXECUTE format($q$
WITH m0 AS (%1$s),
     m AS (SELECT m0.*, row_number() OVER (ORDER BY m0.bucket_start, m0.model) AS want FROM m0),
     o AS (%2$s),
     j AS (SELECT m, o, coalesce(m.bucket_start, o.bucket_start) AS b, coalesce(m.model, o.model) AS md
             FROM m FULL JOIN o ON m.bucket_start = o.bucket_start AND m.model IS NOT DISTINCT FROM o.model),
     bad AS (
        SELECT CASE WHEN (m) IS NULL THEN 'missing'
                    WHEN (o) IS NULL THEN 'extra'
                    WHEN (m).requests IS DISTINCT FROM (o).requests OR (m).successes IS DISTINCT FROM (o).successes
                         OR (m).failures IS DISTINCT FROM (o).failures
                         OR NOT coalesce(abs((m).success_rate - (o).success_rate) <= 1e-9, false) THEN 'counts'
                    WHEN NOT (oracle.rec_within((m).latency_p50_ms, (o).latency_p50_ms)
                              AND oracle.rec_within((m).latency_p95_ms, (o).latency_p95_ms)
                              AND oracle.rec_within((m).latency_p99_ms, (o).latency_p99_ms)) THEN 'percentiles'
               END AS kind, j.*
          FROM j
        UNION ALL
        SELECT 'duplicate', NULL, NULL, d.bucket_start, d.model
          FROM (SELECT m.bucket_start, m.model FROM m GROUP BY 1, 2 HAVING count(*) > 1) d
        UNION ALL
        SELECT 'order', m, NULL, m.bucket_start, m.model
          FROM m
         WHERE m.n <> m.want)
SELECT kind, b, md, (m).requests, (o).requests, (m).successes, (o).successes,
       (m).latency_p50_ms, (o).latency_p50_ms, (m).latency_p95_ms, (o).latency_p95_ms,
       (m).latency_p99_ms, (o).latency_p99_ms
  FROM bad WHERE kind IS NOT NULL
 ORDER BY b, md, kind
$q$, m_sql, o_sql) USING api_type, since, iv, key, base_url;
END
$f$;
COMMENT ON FUNCTION oracle.rec_diff(text, timestamptz, bigint, text, text, boolean) IS
    'test oracle: rows where ops_history (or ops_model_history) disagrees with the exact oracle; none when they agree';

-- oracle.rec_latest_diff(api_type): keys where ops_latest_timestamps disagrees with
-- oracle.rec_latest (kind missing / extra / times), or whose row is out of metrics_key order
-- (kind order); no rows when they agree.
CREATE OR REPLACE FUNCTION oracle.rec_latest_diff(api_type text)
RETURNS TABLE (kind text, metrics_key text,
               ops_last_success_at timestamptz, oracle_last_success_at timestamptz,
               ops_last_failure_at timestamptz, oracle_last_failure_at timestamptz)
LANGUAGE sql STABLE AS $$
WITH m AS (SELECT l.*, row_number() OVER (ORDER BY l.metrics_key) AS want
             FROM ops_latest_timestamps($1) WITH ORDINALITY AS l(metrics_key, last_success_at, last_failure_at, n)),
     o AS (SELECT * FROM oracle.rec_latest($1)),
     j AS (SELECT CASE WHEN m.metrics_key IS NULL THEN 'missing'
                       WHEN o.metrics_key IS NULL THEN 'extra'
                       WHEN m.last_success_at IS DISTINCT FROM o.last_success_at
                            OR m.last_failure_at IS DISTINCT FROM o.last_failure_at THEN 'times'
                       WHEN m.n <> m.want THEN 'order'
                  END AS kind,
                  coalesce(m.metrics_key, o.metrics_key) AS metrics_key,
                  m.last_success_at AS ms, o.last_success_at AS os, m.last_failure_at AS mf, o.last_failure_at AS ofl
             FROM m FULL JOIN o ON m.metrics_key = o.metrics_key)
SELECT * FROM j WHERE kind IS NOT NULL ORDER BY metrics_key, kind
$$;
COMMENT ON FUNCTION oracle.rec_latest_diff(text) IS
    'test oracle: keys where ops_latest_timestamps disagrees with the records; none when they agree';
