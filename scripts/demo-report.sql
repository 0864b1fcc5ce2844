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
