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

\echo '--- rollups: ops_upsert_hourly and ops_upsert_daily over the loaded day'
SELECT date_trunc('day', min(created_at), 'UTC') AS day FROM opsmeter.usage_logs \gset
SELECT ops_upsert_hourly(:'day', :'day'::timestamptz + interval '1 day') AS hourly_rows_written,
       ops_upsert_daily(:'day', :'day'::timestamptz + interval '1 day') AS daily_rows_written;

\echo '--- opsmeter.metrics_daily: the day, overall and per platform'
SELECT bucket_date, coalesce(platform, '(all)') AS platform, success_count AS ok, error_count_total AS errors,
       error_count_sla AS sla_errors, upstream_429_count AS up_429, upstream_529_count AS up_529,
       duration_p50_ms AS p50_ms, duration_p95_ms AS p95_ms, duration_p99_ms AS p99_ms,
       round(duration_avg_ms) AS avg_ms, ttft_p50_ms AS ttft_p50, ttft_p99_ms AS ttft_p99, token_consumed AS tokens
  FROM opsmeter.metrics_daily WHERE group_id IS NULL ORDER BY 1, platform NULLS FIRST;

\echo '--- opsmeter.metrics_hourly: overall, by UTC hour'
SELECT to_char(bucket_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:00') AS hour_utc, success_count AS ok,
       error_count_total AS errors, round(100.0 * error_count_sla / nullif(success_count + error_count_total, 0), 2) AS sla_err_pct,
       duration_p50_ms AS p50_ms, duration_p99_ms AS p99_ms, ttft_p99_ms AS ttft_p99
  FROM opsmeter.metrics_hourly WHERE platform IS NULL AND group_id IS NULL ORDER BY 1;

\echo '--- daily p99 from merged sketches vs the seed''s approximation (max of hourly p99), against exact'
WITH exact AS (
    SELECT g.platform, percentile_disc(0.99) WITHIN GROUP (ORDER BY ul.duration_ms) AS p99
      FROM opsmeter.usage_logs ul JOIN opsmeter.groups g ON g.id = ul.group_id GROUP BY 1
), seedish AS (
    SELECT platform, max(duration_p99_ms) AS p99 FROM opsmeter.metrics_hourly
     WHERE group_id IS NULL AND platform IS NOT NULL GROUP BY 1
)
SELECT d.platform, e.p99 AS exact_p99_ms, d.duration_p99_ms AS opsmeter_p99_ms,
       round(100 * abs(d.duration_p99_ms - e.p99)::numeric / e.p99, 2) AS opsmeter_err_pct,
       s.p99 AS seed_style_p99_ms, round(100 * abs(s.p99 - e.p99)::numeric / e.p99, 2) AS seed_err_pct
  FROM opsmeter.metrics_daily d JOIN exact e USING (platform) JOIN seedish s USING (platform)
 WHERE d.group_id IS NULL ORDER BY 1;

\echo '--- ops_metrics: 6-hour buckets for anthropic, and the busiest hour in 10-minute buckets (raw logs)'
SELECT bucket_start AT TIME ZONE 'UTC' AS bucket_utc, success_count AS ok, error_count_total AS errors, duration_p99_ms AS p99_ms
  FROM ops_metrics(:'day', :'day'::timestamptz + interval '1 day', '6 hours', 'anthropic');
SELECT bucket_start AT TIME ZONE 'UTC' AS bucket_utc, success_count AS ok, duration_p50_ms AS p50_ms, duration_p99_ms AS p99_ms
  FROM ops_metrics(:'day'::timestamptz + interval '14 hours', :'day'::timestamptz + interval '15 hours', '10 minutes');

\echo '--- daily stats: the last week written by ops_daily_stats_backfill (immutable rows, one per UTC day)'
SELECT ops_daily_stats_backfill((now() AT TIME ZONE 'UTC')::date - 7, (now() AT TIME ZONE 'UTC')::date - 1) AS days_written;
SELECT date, requests, success, failed, tokens_in, tokens_out, round(latency_sum_ms::numeric / requests) AS avg_latency_ms,
       (SELECT string_agg(format('%s (%s)', m->>'model', m->>'requests'), ', ' ORDER BY ord)
          FROM jsonb_array_elements(top_models) WITH ORDINALITY AS t(m, ord) WHERE ord <= 3) AS top_3_models
  FROM opsmeter.daily_stats ORDER BY date;

\echo '--- ops_stats: today (live), the last 7 and 30 days (stored days + today)'
SELECT period, since, requests, success, failed, tokens_in + tokens_out AS tokens, round(avg_latency_ms::numeric, 1) AS avg_latency_ms,
       top_models->0->>'model' AS top_model
  FROM (SELECT * FROM ops_stats('today') UNION ALL SELECT * FROM ops_stats('last7d')
        UNION ALL SELECT * FROM ops_stats('last30d')) s;

\echo '--- request records: partitions by UTC day, latest times per key, circuit states'
SELECT partition, day, (SELECT count(*) FROM opsmeter.request_records r WHERE r.tableoid = p.partition) AS records
  FROM ops_record_partitions() p;
SELECT * FROM ops_latest_timestamps('messages');
SELECT metrics_key, state, failure_count, consecutive_failures, next_attempt_at - now() AS retry_in
  FROM ops_circuit_states('messages');

\echo '--- ops_history: messages, 6-hour buckets, all keys, then key-5 (the flaky one) per model'
SELECT bucket_start AT TIME ZONE 'UTC' AS bucket_utc, requests, failures, round(success_rate::numeric, 2) AS success_pct,
       round(latency_p50_ms) AS p50_ms, round(latency_p95_ms) AS p95_ms, round(latency_p99_ms) AS p99_ms
  FROM ops_history('messages', now() - interval '2 days', 21600);
SELECT bucket_start AT TIME ZONE 'UTC' AS bucket_utc, model, requests, round(success_rate::numeric, 2) AS success_pct, round(latency_p99_ms) AS p99_ms
  FROM ops_model_history('messages', now() - interval '1 day', 86400, 'key-5');

\echo '--- the background worker: its jobs ran by themselves (ops_health(), opsmeter.job_runs)'
SELECT pid, backend_type, state, query FROM pg_stat_activity WHERE backend_type = 'opsmeter worker';
SELECT job, last_status, next_run_at - now() AS next_in, consecutive_failures, lag,
       left(last_message, 60) AS last_message
  FROM ops_health() ORDER BY job;
SELECT job, status, rows, runner, left(message, 50) AS message
  FROM opsmeter.job_runs ORDER BY id DESC LIMIT 8;
SELECT parent, count(*) FILTER (WHERE day >= (now() AT TIME ZONE 'UTC')::date) AS days_ahead,
       count(*) FILTER (WHERE day < (now() AT TIME ZONE 'UTC')::date) AS past_days
  FROM ops_log_partitions() GROUP BY parent ORDER BY parent::text;

\echo '--- billing: an exporter (node-1, env demo) samples 20 accounts'' cumulative byte counters every 30 s;'
\echo '    the last hour as one page, ingested, then ingested again: every sample a replay, nothing changes'
\echo '    (when the demo runs again, what an earlier run billed is replayed the first time too)'
\set QUIET on
SET client_min_messages = warning;
SET opsmeter.billing_first_sample = 'baseline';   -- the counters did not start at zero an hour ago
SET opsmeter.billing_price_per_byte = '0.000000001';   -- accounts without a profile
SELECT source_id, expected_node_id, expected_env FROM billing_source_upsert('demo-exporter', 'node-1', 'demo');
SELECT count(*) AS profiles FROM (
    SELECT billing_profile_upsert(md5('demo-account-' || a)::uuid, 20000000, 0.000000002, 1.5, 'demo-2026')
      FROM generate_series(1, 10) a) p;   -- accounts 1 .. 10: 20 MB a month included; 11 .. 20: the defaults
CREATE TEMP TABLE demo_page AS
SELECT jsonb_agg(jsonb_build_object(
           'node_id', 'node-1', 'env', 'demo',
           'sampled_at', to_char(s.t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
           'samples', (SELECT jsonb_agg(jsonb_build_object(
                                'account_id', md5('demo-account-' || a)::uuid,
                                -- monotonic per account, the same on every run: a * 40 kB per 30 s
                                'cumulative_bytes', a * 40000 * (extract(epoch FROM s.t)::bigint / 30)))
                         FROM generate_series(1, 20) a)) ORDER BY s.t) AS page
  FROM (SELECT date_trunc('minute', now()) - interval '1 hour' + i * interval '30 seconds' AS t
          FROM generate_series(0, 119) i) s;
SELECT r->>'status' AS status, r->>'processed_samples' AS processed, r->>'replayed_samples' AS replayed,
       r->>'written_minutes' AS written_minutes
  FROM demo_page, billing_ingest('demo-exporter', page) r;
SELECT r->>'status' AS status, r->>'processed_samples' AS processed, r->>'replayed_samples' AS replayed,
       r->>'written_minutes' AS written_minutes
  FROM demo_page, billing_ingest('demo-exporter', page) r;
SELECT right(l.account_id::text, 6) AS account, count(*) AS minutes, sum(l.bytes) AS bytes,
       sum(l.included_bytes) AS included, sum(l.billable_bytes) AS billable, sum(l.amount) AS amount,
       max(l.pricing_rule_version) AS rule
  FROM opsmeter.billing_ledger l
 WHERE l.storage_node_id = 'demo:node-1' AND l.account_id IN (md5('demo-account-1')::uuid, md5('demo-account-10')::uuid,
                                                          md5('demo-account-11')::uuid, md5('demo-account-20')::uuid)
 GROUP BY l.account_id ORDER BY bytes;
SELECT source_id, healthy, last_result->>'status' AS last_status, window_since, window_until FROM billing_status();
RESET opsmeter.billing_first_sample;
RESET opsmeter.billing_price_per_byte;
\set QUIET off
