-- The demo's report: what is installed, where opsmeter reads from, and the loaded day.
\pset footer off
\echo '--- opsmeter'
SELECT opsmeter_version() AS library, extversion AS sql_objects,
       current_setting('shared_preload_libraries') AS preloaded
  FROM pg_extension WHERE extname = 'opsmeter';

\echo '--- sources (ops_sources())'
SELECT role, relation, is_default, status FROM ops_sources() ORDER BY role;

\echo '--- the loaded day, per platform (exact percentiles from raw rows)'
WITH u AS (
    SELECT g.platform, count(*) AS requests,
           percentile_disc(0.50) WITHIN GROUP (ORDER BY duration_ms) AS p50_ms,
           percentile_disc(0.95) WITHIN GROUP (ORDER BY duration_ms) AS p95_ms,
           percentile_disc(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99_ms,
           sum(input_tokens + output_tokens + cache_creation_tokens + cache_read_tokens) AS tokens
      FROM opsmeter.usage_logs ul JOIN opsmeter.groups g ON g.id = ul.group_id
     GROUP BY g.platform
), e AS (
    SELECT platform, count(*) FILTER (WHERE status_code >= 400) AS errors
      FROM opsmeter.error_logs GROUP BY platform
)
SELECT u.platform, u.requests, e.errors,
       round(100.0 * e.errors / (u.requests + e.errors), 2) AS error_pct,
       u.p50_ms, u.p95_ms, u.p99_ms, u.tokens
  FROM u LEFT JOIN e USING (platform) ORDER BY u.requests DESC;

\echo '--- load by UTC hour (requests)'
SELECT to_char(date_trunc('hour', created_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD HH24:00') AS hour_utc,
       count(*) AS requests,
       repeat('#', (60 * count(*) / max(count(*)) OVER ())::int) AS load
  FROM opsmeter.usage_logs GROUP BY 1 ORDER BY 1;

\echo '--- log_records: top models of the day'
SELECT model_name, count(*) AS requests,
       count(*) FILTER (WHERE status_code >= 400 OR status_code = 0) AS failed,
       sum(tokens_in + tokens_out) AS tokens
  FROM opsmeter.log_records GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 5;

\echo '--- ops_sketch: hourly sketches rolled up to the day, against exact percentile_disc'
WITH hourly AS (
    SELECT date_trunc('hour', ul.created_at) AS hour, g.platform, ops_sketch(ul.duration_ms) AS s
      FROM opsmeter.usage_logs ul JOIN opsmeter.groups g ON g.id = ul.group_id
     GROUP BY 1, 2
), daily AS (
    SELECT platform, ops_sketch_merge(s) AS s FROM hourly GROUP BY platform
), exact AS (
    SELECT g.platform,
           percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY ul.duration_ms) AS e
      FROM opsmeter.usage_logs ul JOIN opsmeter.groups g ON g.id = ul.group_id GROUP BY 1
)
SELECT d.platform, round(q[1]) AS p50_ms, round(q[2]) AS p95_ms, round(q[3]) AS p99_ms,
       e[3] AS exact_p99_ms, round(100 * abs(q[3] - e[3])::numeric / e[3], 3) AS p99_err_pct,
       round(100 * ops_rank(d.s, 2000)::numeric, 1) AS pct_under_2s,
       pg_column_size(d.s) AS sketch_bytes
  FROM daily d JOIN exact x USING (platform),
       LATERAL (SELECT ops_quantiles(d.s, ARRAY[0.5, 0.95, 0.99]) AS q) qq
 ORDER BY 1;
