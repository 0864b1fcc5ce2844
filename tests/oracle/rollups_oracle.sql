-- Exact oracle for opsmeter's hourly and daily ops rollups (SPEC §2), for regression tests.
--
--   psql -d DB -f tests/oracle/rollups_oracle.sql      (re-runnable; needs CREATE EXTENSION opsmeter)
--   SELECT * FROM oracle.hourly('2026-11-21 00:00+00', '2026-11-22 00:00+00');
--   SELECT * FROM oracle.daily('2026-11-21', '2026-11-22');
--
-- Deliberately independent of the extension's code and of the seed's text: no GROUPING SETS, no
-- sketches, no joins on COALESCE keys. Every log row that counts is copied once per grain it belongs
-- to (a UNION ALL of three plain SELECTs), and one GROUP BY computes exact values with
-- percentile_disc. Slow and obviously right is the point; do not optimise it.
--
-- Rules (the product's; the seed's where sane):
--   * Buckets are UTC hours (UTC days for daily), whatever the session TimeZone. Only rows with
--     created_at in [start_time, end_time) are read (daily: [start_day, end_day) as UTC dates);
--     the window is not widened to whole buckets.
--   * usage_logs rows count only if group_id matches a row of groups (inner join: a NULL or unknown
--     group_id is excluded from every grain, the overall one too); their platform is groups.platform;
--     tokens = input + output + cache_creation + cache_read.
--   * error_logs rows keep their own platform and group_id (no join).
--   * Grains, per bucket:  overall  (platform NULL, group_id NULL)  every row;
--                          platform (P, NULL)   rows whose platform is neither NULL nor '';
--                          group    (P, G)      those of them whose group_id is not NULL.
--   * Error counts use the seed's FILTERs verbatim (so a NULL is_business_limited is counted in
--     error_count_total but in neither business_limited_count nor error_count_sla):
--       error_count_total        COALESCE(status_code, 0) >= 400
--       business_limited_count   ... AND is_business_limited
--       error_count_sla          ... AND NOT is_business_limited
--       upstream_*               error_owner = 'provider' AND NOT is_business_limited, with the
--                                effective status COALESCE(upstream_status_code, status_code, 0)
--                                NOT IN (429, 529) / = 429 / = 529 (a status 200 row with upstream
--                                529 is an upstream 529 but not an error).
--   * success_count = usage rows; counts are 0, never NULL, on a side with no rows; token_consumed
--     0 when no usage rows.
--   * duration_* / ttft_*: exact percentile_disc(q) (value of rank ceil(q*n)) over the non-NULL
--     values, exact avg (float8) and max; NULL when there is no value.
-- Row order is not defined; callers ORDER BY.

CREATE SCHEMA IF NOT EXISTS oracle;

-- Internal: one row per (bucket, grain key) from rows with created_at in [start_time, end_time),
-- bucketed to multiples of bucket_seconds since the Unix epoch (3600 = UTC hour, 86400 = UTC day).
CREATE OR REPLACE FUNCTION oracle._rollup(start_time timestamptz, end_time timestamptz,
                                          bucket_seconds integer)
RETURNS TABLE (
    bucket_start timestamptz, platform text, group_id bigint,
    success_count bigint, error_count_total bigint, business_limited_count bigint,
    error_count_sla bigint, upstream_error_count_excl_429_529 bigint, upstream_429_count bigint,
    upstream_529_count bigint, token_consumed bigint,
    duration_p50_ms float8, duration_p90_ms float8, duration_p95_ms float8, duration_p99_ms float8,
    duration_avg_ms float8, duration_max_ms float8,
    ttft_p50_ms float8, ttft_p90_ms float8, ttft_p95_ms float8, ttft_p99_ms float8,
    ttft_avg_ms float8, ttft_max_ms float8)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
WITH
-- every log row of the window, usage and error alike, with its bucket; exactly one of the two
-- halves of the columns is filled
logs AS (
    SELECT to_timestamp((floor(extract(epoch FROM ul.created_at) / $3) * $3)::float8) AS bucket,
           g.platform AS platform,
           ul.group_id AS group_id,
           true AS is_usage,
           ul.input_tokens + ul.output_tokens + ul.cache_creation_tokens + ul.cache_read_tokens
               AS tokens,
           ul.duration_ms::float8 AS duration_ms,
           ul.first_token_ms::float8 AS ttft_ms,
           NULL::integer AS status_code,
           NULL::integer AS effective_status,
           NULL::text AS error_owner,
           NULL::boolean AS is_business_limited
      FROM opsmeter.usage_logs ul
      JOIN opsmeter.groups g ON g.id = ul.group_id
     WHERE ul.created_at >= $1 AND ul.created_at < $2
    UNION ALL
    SELECT to_timestamp((floor(extract(epoch FROM el.created_at) / $3) * $3)::float8),
           el.platform,
           el.group_id,
           false,
           NULL, NULL, NULL,
           el.status_code,
           COALESCE(el.upstream_status_code, el.status_code, 0),
           el.error_owner,
           el.is_business_limited
      FROM opsmeter.error_logs el
     WHERE el.created_at >= $1 AND el.created_at < $2
),
-- each row once per grain it belongs to
per_grain AS (
    SELECT 1 AS grain, NULL::text AS gplatform, NULL::bigint AS ggroup, logs.*
      FROM logs
    UNION ALL
    SELECT 2, logs.platform, NULL::bigint, logs.*
      FROM logs
     WHERE logs.platform IS NOT NULL AND logs.platform <> ''
    UNION ALL
    SELECT 3, logs.platform, logs.group_id, logs.*
      FROM logs
     WHERE logs.platform IS NOT NULL AND logs.platform <> '' AND logs.group_id IS NOT NULL
)
SELECT bucket,
       gplatform,
       ggroup,
       count(*) FILTER (WHERE is_usage),
       count(*) FILTER (WHERE NOT is_usage AND COALESCE(status_code, 0) >= 400),
       count(*) FILTER (WHERE NOT is_usage AND COALESCE(status_code, 0) >= 400
                              AND is_business_limited),
       count(*) FILTER (WHERE NOT is_usage AND COALESCE(status_code, 0) >= 400
                              AND NOT is_business_limited),
       count(*) FILTER (WHERE NOT is_usage AND error_owner = 'provider' AND NOT is_business_limited
                              AND effective_status NOT IN (429, 529)),
       count(*) FILTER (WHERE NOT is_usage AND error_owner = 'provider' AND NOT is_business_limited
                              AND effective_status = 429),
       count(*) FILTER (WHERE NOT is_usage AND error_owner = 'provider' AND NOT is_business_limited
                              AND effective_status = 529),
       COALESCE(sum(tokens) FILTER (WHERE is_usage), 0)::bigint,
       -- error rows carry NULL latencies, and ordered-set aggregates and avg/max skip NULLs
       percentile_disc(0.50) WITHIN GROUP (ORDER BY duration_ms),
       percentile_disc(0.90) WITHIN GROUP (ORDER BY duration_ms),
       percentile_disc(0.95) WITHIN GROUP (ORDER BY duration_ms),
       percentile_disc(0.99) WITHIN GROUP (ORDER BY duration_ms),
       avg(duration_ms),
       max(duration_ms),
       percentile_disc(0.50) WITHIN GROUP (ORDER BY ttft_ms),
       percentile_disc(0.90) WITHIN GROUP (ORDER BY ttft_ms),
       percentile_disc(0.95) WITHIN GROUP (ORDER BY ttft_ms),
       percentile_disc(0.99) WITHIN GROUP (ORDER BY ttft_ms),
       avg(ttft_ms),
       max(ttft_ms)
  FROM per_grain
 GROUP BY grain, bucket, gplatform, ggroup
$$;
COMMENT ON FUNCTION oracle._rollup(timestamptz, timestamptz, integer) IS
    'test oracle internal: exact rollup of opsmeter logs in [start_time, end_time) into buckets of bucket_seconds since the epoch';

-- Exact hourly rollup: UTC hours of rows with created_at in [start_time, end_time).
CREATE OR REPLACE FUNCTION oracle.hourly(start_time timestamptz, end_time timestamptz)
RETURNS TABLE (
    bucket_start timestamptz, platform text, group_id bigint,
    success_count bigint, error_count_total bigint, business_limited_count bigint,
    error_count_sla bigint, upstream_error_count_excl_429_529 bigint, upstream_429_count bigint,
    upstream_529_count bigint, token_consumed bigint,
    duration_p50_ms float8, duration_p90_ms float8, duration_p95_ms float8, duration_p99_ms float8,
    duration_avg_ms float8, duration_max_ms float8,
    ttft_p50_ms float8, ttft_p90_ms float8, ttft_p95_ms float8, ttft_p99_ms float8,
    ttft_avg_ms float8, ttft_max_ms float8)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM oracle._rollup($1, $2, 3600) $$;
COMMENT ON FUNCTION oracle.hourly(timestamptz, timestamptz) IS
    'test oracle: exact hourly ops rollup (UTC hours; overall, platform and group grains) of opsmeter logs in [start_time, end_time)';

-- Exact daily rollup, from the raw logs: UTC dates in [start_day, end_day).
CREATE OR REPLACE FUNCTION oracle.daily(start_day date, end_day date)
RETURNS TABLE (
    bucket_date date, platform text, group_id bigint,
    success_count bigint, error_count_total bigint, business_limited_count bigint,
    error_count_sla bigint, upstream_error_count_excl_429_529 bigint, upstream_429_count bigint,
    upstream_529_count bigint, token_consumed bigint,
    duration_p50_ms float8, duration_p90_ms float8, duration_p95_ms float8, duration_p99_ms float8,
    duration_avg_ms float8, duration_max_ms float8,
    ttft_p50_ms float8, ttft_p90_ms float8, ttft_p95_ms float8, ttft_p99_ms float8,
    ttft_avg_ms float8, ttft_max_ms float8)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT (r.bucket_start AT TIME ZONE 'UTC')::date, r.platform, r.group_id,
       r.success_count, r.error_count_total, r.business_limited_count, r.error_count_sla,
       r.upstream_error_count_excl_429_529, r.upstream_429_count, r.upstream_529_count,
       r.token_consumed,
       r.duration_p50_ms, r.duration_p90_ms, r.duration_p95_ms, r.duration_p99_ms,
       r.duration_avg_ms, r.duration_max_ms,
       r.ttft_p50_ms, r.ttft_p90_ms, r.ttft_p95_ms, r.ttft_p99_ms, r.ttft_avg_ms, r.ttft_max_ms
  FROM oracle._rollup($1::timestamp AT TIME ZONE 'UTC', $2::timestamp AT TIME ZONE 'UTC', 86400) r
$$;
COMMENT ON FUNCTION oracle.daily(date, date) IS
    'test oracle: exact daily ops rollup (UTC dates; overall, platform and group grains) computed from the raw opsmeter logs of days in [start_day, end_day)';
