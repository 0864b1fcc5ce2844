-- Ops rollups (SPEC §2): ops_upsert_hourly / ops_upsert_daily / ops_metrics against an
-- independent exact oracle (tests/oracle/rollups_oracle.sql: plain per-grain queries with
-- percentile_disc), on a generated day plus hand-made edge cases.
\set ECHO none
\set QUIET on
\i tests/oracle/rollups_oracle.sql
\i tests/oracle/compare.sql
\set day 2026-11-21
\set usage_rows 30000
\set seed 0.42
\o /dev/null
\i bench/traffic.sql
\o
\set QUIET off
\set ECHO all

-- Edge cases on 2026-11-22: a group with an empty platform, usage without a group or with an
-- unknown group, errors without a group or without a platform, NULL status and NULL
-- business-limited flags, a 200 with an upstream 529, an hour with only errors, a group with a
-- single request (constant input), NULL durations. (The default error_logs table has no NULL
-- is_business_limited; the seed's filters treat one as neither limited nor SLA.)
INSERT INTO opsmeter.groups (id, name, platform) VALUES (90, 'blank', '');
INSERT INTO opsmeter.usage_logs (created_at, group_id, duration_ms, first_token_ms, input_tokens, output_tokens)
VALUES ('2026-11-22 01:10+00', 90, 1000, 100, 10, 1),      -- empty platform: overall only
       ('2026-11-22 01:11+00', NULL, 2000, NULL, 10, 1),   -- no group: not counted at all
       ('2026-11-22 01:12+00', 999, 3000, NULL, 10, 1),    -- unknown group: not counted at all
       ('2026-11-22 01:13+00', 7, 1234, NULL, 5, 5),       -- the only request of group 7
       ('2026-11-22 01:14+00', 3, NULL, NULL, 1, 1),       -- no duration
       ('2026-11-22 01:15+00', 3, 4000, 400, 1, 1);
INSERT INTO opsmeter.error_logs (created_at, platform, group_id, status_code, upstream_status_code, error_owner, is_business_limited)
VALUES ('2026-11-22 01:20+00', 'openai', NULL, 502, 500, 'provider', false),  -- no group
       ('2026-11-22 01:21+00', NULL, 3, 503, 529, 'provider', false),         -- no platform
       ('2026-11-22 01:22+00', '', 3, 429, 429, 'provider', false),           -- empty platform
       ('2026-11-22 01:23+00', 'anthropic', 3, NULL, 529, 'provider', false), -- NULL status
       ('2026-11-22 01:24+00', 'anthropic', 3, 429, NULL, 'platform', true),  -- business limited
       ('2026-11-22 01:25+00', 'anthropic', 3, 200, 529, 'provider', false),  -- failover
       ('2026-11-22 02:30+00', 'gemini', 20, 500, NULL, 'platform', false),   -- an hour of errors only
       ('2026-11-22 02:31+00', 'gemini', 20, 429, NULL, 'platform', true);

-- 1. Two days, every grain, against the oracle.
SELECT ops_upsert_hourly('2026-11-21 00:00+00', '2026-11-23 00:00+00');
SELECT * FROM oracle.hourly_diff('2026-11-21 00:00+00', '2026-11-23 00:00+00');
-- the edge-case hours, row by row
SELECT bucket_start, platform, group_id, success_count AS ok, error_count_total AS err, business_limited_count AS lim,
       error_count_sla AS sla, upstream_error_count_excl_429_529 AS up, upstream_429_count AS u429, upstream_529_count AS u529,
       token_consumed AS tok, duration_p50_ms AS p50, duration_max_ms AS max, ttft_p99_ms AS ttft99
  FROM opsmeter.metrics_hourly
 WHERE bucket_start >= '2026-11-22 01:00+00' AND (platform IS NULL OR group_id IN (3, 7, 20, 90) OR group_id IS NULL)
 ORDER BY 1, 2 NULLS FIRST, 3 NULLS FIRST;

-- 2. Daily rows merged from the hourly sketches, against the exact daily oracle.
SELECT ops_upsert_daily('2026-11-21 00:00+00', '2026-11-23 00:00+00');
SELECT * FROM oracle.daily_diff('2026-11-21', '2026-11-23');
SELECT ops_latest_hourly_bucket(), ops_latest_daily_bucket();

-- 3. Idempotence: a second run writes the same rows, sketches included.
SELECT oracle.hourly_md5() AS before \gset
SELECT ops_upsert_hourly('2026-11-21 00:00+00', '2026-11-23 00:00+00');
SELECT oracle.hourly_md5() = :'before' AS same_rows;

-- 4. The window widens to whole hours: a quarter hour recomputes hour 10 with all its data.
UPDATE opsmeter.metrics_hourly SET success_count = -1 WHERE bucket_start = '2026-11-21 10:00+00';
SELECT ops_upsert_hourly('2026-11-21 10:30+00', '2026-11-21 10:45+00');
SELECT count(*) AS hour_10_rows, count(*) FILTER (WHERE success_count < 0) AS untouched
  FROM opsmeter.metrics_hourly WHERE bucket_start = '2026-11-21 10:00+00';
SELECT oracle.hourly_md5() = :'before' AS same_rows;

-- 5. A recomputed hour is replaced exactly: a group whose data went loses its row.
DELETE FROM opsmeter.usage_logs WHERE group_id = 24 AND created_at >= '2026-11-21 10:00+00' AND created_at < '2026-11-21 11:00+00';
DELETE FROM opsmeter.error_logs WHERE group_id = 24 AND created_at >= '2026-11-21 10:00+00' AND created_at < '2026-11-21 11:00+00';
SELECT ops_upsert_hourly('2026-11-21 10:00+00', '2026-11-21 11:00+00');
SELECT count(*) AS group_24_rows FROM opsmeter.metrics_hourly WHERE bucket_start = '2026-11-21 10:00+00' AND group_id = 24;
SELECT * FROM oracle.hourly_diff('2026-11-21 10:00+00', '2026-11-21 11:00+00');
SELECT oracle.hourly_md5() AS before \gset

-- 6. NULL, empty and inverted windows do nothing and return 0.
SELECT ops_upsert_hourly(NULL, '2026-11-22 00:00+00') AS null_start, ops_upsert_hourly('2026-11-21 00:00+00', NULL) AS null_end,
       ops_upsert_hourly('2026-11-21 05:00+00', '2026-11-21 05:00+00') AS empty,
       ops_upsert_hourly('2026-11-22 00:00+00', '2026-11-21 00:00+00') AS inverted,
       ops_upsert_daily('2026-11-22 00:00+00', '2026-11-21 00:00+00') AS inverted_daily;
SELECT oracle.hourly_md5() = :'before' AS unchanged;

-- 7. The session TimeZone changes nothing: buckets are UTC hours and days.
SET TimeZone = 'Asia/Kathmandu';
SELECT ops_upsert_hourly('2026-11-21 05:45+05:45', '2026-11-23 05:45+05:45');
SELECT oracle.hourly_md5() = :'before' AS same_rows_in_kathmandu;
SELECT ops_upsert_daily('2026-11-21 05:45', '2026-11-23 05:45');
SELECT * FROM oracle.daily_diff('2026-11-21', '2026-11-23');
RESET TimeZone;

-- 8. Bad input: SQLSTATE and a message naming the argument.
SELECT regress.err($$SELECT ops_upsert_hourly('-infinity', '2026-11-21')$$);
SELECT regress.err($$SELECT ops_upsert_daily('2026-11-21', 'infinity')$$);
SELECT regress.err($$SELECT * FROM ops_metrics('2026-11-21', '2026-11-22', '0 hours')$$);
SELECT regress.err($$SELECT * FROM ops_metrics('2026-11-21', '2026-11-22', '-1 hour')$$);
SELECT regress.err($$SELECT * FROM ops_metrics('2026-11-21', '2026-11-22', '1 month 2 days')$$);
SELECT regress.err($$SELECT * FROM ops_metrics('2026-11-21', '2026-11-22', '30 seconds')$$);
SELECT regress.err($$SELECT * FROM ops_metrics('2026-11-21', '2026-11-22', '400 days')$$);
SELECT regress.err($$SELECT * FROM ops_metrics('2026-11-21', '2026-11-22', NULL)$$);
SELECT regress.err($$SELECT * FROM ops_metrics('2026-11-21', 'infinity', '1 hour')$$);
-- a source that lost a column since it was registered: the error names it, nothing changes
CREATE TABLE regress.my_usage AS SELECT * FROM opsmeter.usage_logs;
SELECT ops_set_source('usage_logs', 'regress.my_usage');
ALTER TABLE regress.my_usage DROP COLUMN first_token_ms;
SELECT regress.err($$SELECT ops_upsert_hourly('2026-11-21', '2026-11-22')$$);
SELECT regress.err($$SELECT * FROM ops_metrics('2026-11-21', '2026-11-22', '10 minutes')$$);
SELECT oracle.hourly_md5() = :'before' AS unchanged;
SELECT ops_reset_source('usage_logs');

-- 9. ops_metrics: hourly rows, daily rows and the raw logs agree with each other and the oracle.
-- (pg_regress runs in PST8PDT: sections 1-8 passed there; results below are shown in UTC)
SET TimeZone = 'UTC';
SET DateStyle = 'ISO';
-- whole day in one bucket (daily row) = sum of its hours = sum of raw 20-minute buckets
WITH d AS (SELECT * FROM ops_metrics('2026-11-21 00:00+00', '2026-11-22 00:00+00', '1 day')),
     h AS (SELECT sum(success_count) s, sum(error_count_total) e, sum(token_consumed) t, count(*) n FROM ops_metrics('2026-11-21 00:00+00', '2026-11-22 00:00+00', '1 hour')),
     r AS (SELECT sum(success_count) s, sum(error_count_total) e, sum(token_consumed) t, count(*) n FROM ops_metrics('2026-11-21 00:00+00', '2026-11-22 00:00+00', '20 minutes')),
     o AS (SELECT * FROM oracle.daily('2026-11-21', '2026-11-22') WHERE platform IS NULL)
SELECT d.bucket_start, (SELECT count(*) FROM d) AS day_rows, h.n AS hour_rows, r.n AS raw_rows,
       d.success_count = o.success_count AND h.s = o.success_count AND r.s = o.success_count AS success_agrees,
       d.error_count_total = o.error_count_total AND h.e = o.error_count_total AND r.e = o.error_count_total AS errors_agree,
       d.token_consumed = h.t AND h.t = r.t AS tokens_agree,
       oracle.within(d.duration_p99_ms, o.duration_p99_ms::numeric) AND oracle.within(d.ttft_p50_ms, o.ttft_p50_ms::numeric) AS percentiles_within_alpha,
       d.duration_sketch::text = (SELECT duration_sketch::text FROM opsmeter.metrics_daily WHERE bucket_date = '2026-11-21' AND platform IS NULL) AS same_sketch_as_daily_row
  FROM d, h, r, o;
-- a range that is not whole buckets widens to them; buckets align to Monday 2000-01-03 UTC
SELECT bucket_start, platform, group_id, success_count FROM ops_metrics('2026-11-21 10:20+00', '2026-11-21 12:05+00', '1 hour', 'openai');
SELECT bucket_start, success_count > 0 AS has_data FROM ops_metrics('2026-11-19 00:00+00', '2026-11-24 00:00+00', '7 days');
SELECT bucket_start, success_count FROM ops_metrics('2026-11-01 00:00+00', '2026-12-01 00:00+00', '1 month', NULL, 7) ;
-- a group's rows under any platform merge; platform and group filters pick one grain
SELECT g.group_id, m.success_count = o.success_count AND m.error_count_total = o.error_count_total AS agrees
  FROM (VALUES (3), (20)) g(group_id),
       LATERAL (SELECT * FROM ops_metrics('2026-11-22 01:00+00', '2026-11-22 03:00+00', '2 hours', NULL, g.group_id)) m,
       LATERAL (SELECT sum(success_count) success_count, sum(error_count_total) error_count_total
                  FROM oracle.hourly('2026-11-22 01:00+00', '2026-11-22 03:00+00') o WHERE o.group_id = g.group_id) o
 ORDER BY 1;
-- raw 15-minute buckets against a direct count of the logs
SELECT count(*) AS buckets, bool_and(m.success_count = c.n) AS counts_agree
  FROM ops_metrics('2026-11-21 12:00+00', '2026-11-21 14:00+00', '15 minutes', 'anthropic') m
  JOIN (SELECT date_bin('15 minutes', u.created_at, '2000-01-03 00:00+00') b, count(*) n
          FROM opsmeter.usage_logs u JOIN opsmeter.groups g ON g.id = u.group_id AND g.platform = 'anthropic'
         WHERE u.created_at >= '2026-11-21 12:00+00' AND u.created_at < '2026-11-21 14:00+00' GROUP BY 1) c ON c.b = m.bucket_start;
SELECT count(*) AS rows_for_empty_range FROM ops_metrics('2026-11-22 00:00+00', '2026-11-21 00:00+00', '1 hour');
SELECT count(*) AS rows_for_null_range FROM ops_metrics(NULL, '2026-11-21 00:00+00', '1 hour');

-- 10. Catch-up: from nothing to everything up to now() - opsmeter.rollup_lag.
TRUNCATE opsmeter.metrics_hourly, opsmeter.metrics_daily;
SELECT ops_rollup_catch_up() > 0 AS wrote_rows;
SELECT * FROM oracle.hourly_diff('2026-11-21 00:00+00', '2026-11-23 00:00+00');
SELECT * FROM oracle.daily_diff('2026-11-21', '2026-11-22');
-- the lag: a request a minute old is left for later with a 2-hour lag, rolled up with none
INSERT INTO opsmeter.usage_logs (created_at, group_id, duration_ms) VALUES (now() - interval '1 minute', 1, 42);
SET opsmeter.rollup_lag = '2h';
SELECT ops_rollup_catch_up() >= 0 AS ran;
SELECT count(*) AS rolled_up FROM opsmeter.metrics_hourly WHERE bucket_start = date_bin('1 hour', now() - interval '1 minute', '2000-01-03 00:00+00') AND group_id = 1;
SET opsmeter.rollup_lag = 0;
SELECT ops_rollup_catch_up() > 0 AS wrote_rows;
SELECT success_count >= 1 AS rolled_up FROM opsmeter.metrics_hourly WHERE bucket_start = date_bin('1 hour', now() - interval '1 minute', '2000-01-03 00:00+00') AND group_id = 1;
SELECT regress.err($$SET opsmeter.rollup_lag = '8d'$$);
RESET opsmeter.rollup_lag;

-- 11. The aggregation runs with enable_sort off and work_mem >= opsmeter.rollup_work_mem, and
-- gives the caller's settings back.
SET work_mem = '1MB';
SET enable_sort = on;
SHOW opsmeter.rollup_work_mem;
SELECT ops_upsert_hourly('2026-11-21 00:00+00', '2026-11-21 02:00+00') > 0 AS wrote_rows;
SELECT current_setting('work_mem') AS work_mem, current_setting('enable_sort') AS enable_sort;
RESET work_mem;
RESET enable_sort;
