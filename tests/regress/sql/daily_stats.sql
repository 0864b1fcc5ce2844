-- Daily stats (seed: daily_stats_job): ops_daily_stats_run / ops_daily_stats_backfill / ops_stats
-- against an independent oracle (tests/oracle/daily_stats_oracle.sql: the seed's expressions over
-- the raw log_records), on generated traffic of the last ten UTC days plus hand-made edge cases.
-- The functions refuse today and ops_stats reads now(), so the days are relative to today (UTC):
-- regress.ds_d(k) is the UTC date k days ago. Only booleans, counts and mismatches are shown,
-- never the dates. (A run that crosses UTC midnight can fail; run it again.)
\set ECHO none
\set QUIET on
SET client_min_messages = warning;  -- the oracle's schema may exist already
\i tests/oracle/daily_stats_oracle.sql
RESET client_min_messages;
-- a clean slate (bench/traffic.sql, used by other files, fills log_records for its own day)
TRUNCATE opsmeter.log_records, opsmeter.daily_stats, opsmeter.daily_model_stats;
CREATE FUNCTION regress.ds_d(k integer) RETURNS date LANGUAGE sql STABLE
AS $$ SELECT (now() AT TIME ZONE 'UTC')::date - k $$;
-- regress.ds_ts(k, t): the instant t (a time of day, UTC) of the day k days ago
CREATE FUNCTION regress.ds_ts(k integer, t interval) RETURNS timestamptz LANGUAGE sql STABLE
AS $$ SELECT (regress.ds_d(k) + t) AT TIME ZONE 'UTC' $$;

-- Traffic on days k = 10 .. 1 ago, none on day 5. Per day i = 10 - k: a window of 10 (even i)
-- or 11 (odd i) of 16 pool models, the first with 12 + i requests and the others with 10 (so odd
-- days tie at the top-10 cut and the model name decides), 'phi-mini' with 9 every day (never in a
-- day's top 10, first over the period), and 2 requests with model ''. Statuses from the seed's
-- classes (200..399 success, >= 400 or 0 failed, 199 neither). Each day's first row is at
-- 00:00:00 UTC and its last at 23:59:59.999999; the rest uniform over the UTC day.
\o /dev/null
SELECT setseed(0.17);
\o
CREATE TABLE regress.ds_pool (k integer PRIMARY KEY, model text NOT NULL);
INSERT INTO regress.ds_pool VALUES
    (0, 'qwen-max'), (1, 'claude-opus'), (2, 'gpt-nano'), (3, 'gemini-pro'), (4, 'mistral-small'),
    (5, 'deepseek-chat'), (6, 'llama-large'), (7, 'claude-haiku'), (8, 'grok-fast'), (9, 'gpt-mini'),
    (10, 'kimi-turbo'), (11, 'gemini-flash'), (12, 'glm-air'), (13, 'qwen-plus'), (14, 'claude-sonnet'),
    (15, 'mixtral-big');
INSERT INTO opsmeter.log_records (created_at, model_name, status_code, tokens_in, tokens_out, latency_ms)
SELECT CASE r.rn WHEN 1 THEN regress.ds_ts(r.k, '0 s')
                 WHEN 2 THEN regress.ds_ts(r.k, '23:59:59.999999')
                 ELSE regress.ds_ts(r.k, interval '1 microsecond' * floor(r.u * 86400e6)) END,
       r.model,
       (ARRAY[200, 200, 200, 200, 201, 304, 399, 400, 429, 500, 0, 199])[1 + floor(random() * 12)::int],
       floor(random() * 4000)::bigint, floor(random() * 1500)::bigint,
       CASE WHEN random() < 0.05 THEN 0 ELSE 1 + floor(random() * 30000)::bigint END
  FROM (SELECT m.k, m.model, random() AS u, row_number() OVER (PARTITION BY m.k ORDER BY random()) AS rn
          FROM (SELECT 10 - i AS k, p.model, CASE WHEN j = 0 THEN 12 + i ELSE 10 END AS n
                  FROM generate_series(0, 9) i, generate_series(0, 9 + i % 2) j, regress.ds_pool p
                 WHERE p.k = (i * 3 + j) % 16
                UNION ALL
                SELECT 10 - i, 'phi-mini', 9 FROM generate_series(0, 9) i
                UNION ALL
                SELECT 10 - i, '', 2 FROM generate_series(0, 9) i) m,
               generate_series(1, m.n) c
         WHERE m.k <> 5
         ORDER BY m.k, m.model, c) r
 ORDER BY random();
\set QUIET off
\set ECHO all

-- 0. The data is what the cases below need: 9 days of 12+ models, a tie at some day's top-10
-- cut, a model that is in no day's top 10, and every status class.
SELECT count(*) AS days,
       bool_and(n_models >= 12) AS twelve_models_a_day,
       bool_or(tie_at_cut) AS a_tie_at_the_cut,
       bool_and(NOT phi_in_top) AS phi_never_in_a_day_top_10,
       (SELECT array_agg(DISTINCT status_code ORDER BY status_code) FROM opsmeter.log_records) AS statuses
  FROM (SELECT d, (SELECT count(*) FROM oracle.ds_models(d)) AS n_models,
               (SELECT requests FROM oracle.ds_models(d) OFFSET 9 LIMIT 1)
                 = (SELECT requests FROM oracle.ds_models(d) OFFSET 10 LIMIT 1) AS tie_at_cut,
               (SELECT top_models @> '[{"model": "phi-mini"}]' FROM oracle.ds_day(d)) AS phi_in_top
          FROM (SELECT regress.ds_d(k) FROM generate_series(1, 10) k WHERE k <> 5) g(d)) x;

-- 1. Nothing today yet: one row of zeros, avg NULL, no top models.
SELECT period, requests, success, failed, tokens_in, tokens_out, latency_sum_ms,
       avg_latency_ms IS NULL AS avg_is_null, top_models
  FROM ops_stats('today');
SELECT * FROM oracle.ds_stats_diff('today');

-- 2. One day against the oracle (its row and every model in daily_model_stats).
SELECT ops_daily_stats_run(regress.ds_d(8)) AS written;
SELECT * FROM oracle.ds_days_diff(regress.ds_d(8), regress.ds_d(8));
SELECT jsonb_array_length(top_models) AS top_models FROM opsmeter.daily_stats WHERE date = regress.ds_d(8);

-- 3. Idempotent: a second run writes nothing and returns false; the row (created_at included)
-- and the model rows are unchanged.
SELECT s::text AS day8_row FROM opsmeter.daily_stats s WHERE date = regress.ds_d(8) \gset
SELECT md5(string_agg(m::text, ',' ORDER BY model)) AS day8_models FROM opsmeter.daily_model_stats m WHERE date = regress.ds_d(8) \gset
SELECT ops_daily_stats_run(regress.ds_d(8)) AS written;
SELECT (SELECT s::text FROM opsmeter.daily_stats s WHERE date = regress.ds_d(8)) = :'day8_row' AS same_row,
       (SELECT md5(string_agg(m::text, ',' ORDER BY model)) FROM opsmeter.daily_model_stats m WHERE date = regress.ds_d(8)) = :'day8_models' AS same_models;

-- 4. A day without traffic: false, no row.
SELECT ops_daily_stats_run(regress.ds_d(5)) AS written;
SELECT (SELECT count(*) FROM opsmeter.daily_stats WHERE date = regress.ds_d(5)) AS day_rows,
       (SELECT count(*) FROM opsmeter.daily_model_stats WHERE date = regress.ds_d(5)) AS model_rows;

-- 5. Immutable: rows that arrive later for a computed day change nothing (the oracle does see
-- them), and ops_stats uses the stored day, not the source, for that day.
INSERT INTO opsmeter.log_records (created_at, model_name, status_code, tokens_in, tokens_out, latency_ms)
SELECT regress.ds_ts(8, interval '1 minute' * g), 'late-model', 500, 1, 1, 1 FROM generate_series(1, 30) g;
SELECT ops_daily_stats_run(regress.ds_d(8)) AS written;
SELECT (SELECT s::text FROM opsmeter.daily_stats s WHERE date = regress.ds_d(8)) = :'day8_row' AS same_row,
       (SELECT md5(string_agg(m::text, ',' ORDER BY model)) FROM opsmeter.daily_model_stats m WHERE date = regress.ds_d(8)) = :'day8_models' AS same_models,
       (SELECT count(*) FROM oracle.ds_days_diff(regress.ds_d(8), regress.ds_d(8))) > 0 AS oracle_sees_late_rows;
SELECT s.requests = o.requests - 30 AND s.failed = o.failed - 30 AS stored_day_used
  FROM ops_stats('last30d') s, oracle.ds_period(s.since, s.until) o;

-- 6. Backfill days 10 .. 3 ago: 6 written (day 8 exists, day 5 has no traffic); day 8 keeps its
-- row; a second backfill writes nothing.
SELECT ops_daily_stats_backfill(regress.ds_d(10), regress.ds_d(3)) AS days_written;
SELECT count(*) AS day_rows, bool_or(s::text = :'day8_row') AS day8_unchanged FROM opsmeter.daily_stats s;
SELECT ops_daily_stats_backfill(regress.ds_d(10), regress.ds_d(3)) AS days_written;
DELETE FROM opsmeter.log_records WHERE model_name = 'late-model';
SELECT * FROM oracle.ds_days_diff(regress.ds_d(10), regress.ds_d(3));

-- 7. daily_model_stats holds every model of each day (more than the 10 of top_models), sums to
-- the day's requests and tokens, and its head is top_models.
SELECT count(*) AS days, bool_and(m.n > 10) AS more_than_10_models, bool_and(m.requests = s.requests) AS sum_is_requests,
       bool_and(m.tokens = s.tokens_in + s.tokens_out) AS sum_is_tokens, bool_and(m.top = s.top_models) AS head_is_top_models
  FROM opsmeter.daily_stats s,
       LATERAL (SELECT count(*) AS n, sum(requests) AS requests, sum(tokens) AS tokens,
                       (SELECT jsonb_agg(jsonb_build_object('model', t.model, 'requests', t.requests, 'tokens', t.tokens)
                                         ORDER BY t.requests DESC, t.model)
                          FROM (SELECT * FROM opsmeter.daily_model_stats t WHERE t.date = s.date
                                 ORDER BY requests DESC, model LIMIT 10) t) AS top
                  FROM opsmeter.daily_model_stats x WHERE x.date = s.date) m;

-- 8. Days that are not complete, and inverted ranges: 22023 (dates in the messages not shown).
SELECT split_part(regress.err($$SELECT ops_daily_stats_run(regress.ds_d(0))$$), ':', 1) AS today,
       split_part(regress.err($$SELECT ops_daily_stats_run(regress.ds_d(-3))$$), ':', 1) AS future,
       split_part(regress.err($$SELECT ops_daily_stats_backfill(regress.ds_d(3), regress.ds_d(4))$$), ':', 1) AS from_after_to,
       split_part(regress.err($$SELECT ops_daily_stats_backfill(regress.ds_d(2), regress.ds_d(0))$$), ':', 1) AS to_today,
       split_part(regress.err($$SELECT ops_daily_stats_backfill(regress.ds_d(2), regress.ds_d(-1))$$), ':', 1) AS to_future,
       ops_daily_stats_run(NULL) IS NULL AS strict;
SELECT count(*) AS day_rows FROM opsmeter.daily_stats WHERE date >= regress.ds_d(2);

-- 9. ops_stats against the raw rows of the same [since, until): stored days 10 .. 3, days 2 and 1
-- from the source (no daily_stats row), and today's rows so far; rows after now() are not counted.
INSERT INTO opsmeter.log_records (created_at, model_name, status_code, tokens_in, tokens_out, latency_ms)
SELECT regress.ds_ts(0, '0 s') + interval '1 microsecond' * floor(random() * extract(epoch FROM now() - regress.ds_ts(0, '0 s')) * 1e6),
       models[1 + floor(random() * 18)::int],
       (ARRAY[200, 201, 304, 399, 400, 429, 500, 0])[1 + floor(random() * 8)::int],
       g, 2 * g, 10 * g
  FROM generate_series(1, 60) g,
       (SELECT array_agg(model ORDER BY k) || ARRAY['phi-mini', ''] AS models FROM regress.ds_pool) p;
INSERT INTO opsmeter.log_records (created_at, model_name, status_code, tokens_in, tokens_out, latency_ms)
VALUES (now() + interval '1 hour', 'future-model', 200, 1, 1, 1), (now() + interval '2 days', 'future-model', 200, 1, 1, 1);
SELECT p AS period, d.* FROM unnest(ARRAY['today', 'last7d', 'last30d']) p, LATERAL oracle.ds_stats_diff(p) d;
-- over 30 days 'phi-mini' (in no day's top 10) leads, and the 10th and 11th model tie
SELECT top_models->0->>'model' AS leader,
       (SELECT requests FROM oracle.ds_models_between(since, until) OFFSET 9 LIMIT 1)
         = (SELECT requests FROM oracle.ds_models_between(since, until) OFFSET 10 LIMIT 1) AS tie_at_the_cut
  FROM ops_stats('last30d');
SELECT count(*) AS day_rows FROM opsmeter.daily_stats WHERE date >= regress.ds_d(2);
SELECT regress.err($$SELECT * FROM ops_stats('yesterday')$$);
SELECT split_part(regress.err($$SELECT * FROM ops_stats('Today')$$), ':', 1) AS wrong_case,
       split_part(regress.err($$SELECT * FROM ops_stats('')$$), ':', 1) AS empty;

-- 10. The session TimeZone changes nothing: today and the default day are UTC dates, days are
-- UTC days, periods start at UTC midnight. First two zones on either side of the date line (at any
-- hour one of them is on another date than UTC), then Kathmandu (UTC+05:45).
SET TimeZone = 'Pacific/Kiritimati';  -- UTC+14
SELECT ops_daily_stats_run() AS written;
SELECT split_part(regress.err($$SELECT ops_daily_stats_run(regress.ds_d(0))$$), ':', 1) AS today,
       split_part(regress.err($$SELECT ops_daily_stats_backfill(regress.ds_d(2), regress.ds_d(0))$$), ':', 1) AS to_today,
       (SELECT count(*) FROM unnest(ARRAY['today', 'last7d', 'last30d']) p, LATERAL oracle.ds_stats_diff(p)) AS stats_mismatches;
SET TimeZone = 'Etc/GMT+12';          -- UTC-12 (POSIX sign)
SELECT ops_daily_stats_run() AS written;
SELECT split_part(regress.err($$SELECT ops_daily_stats_run(regress.ds_d(0))$$), ':', 1) AS today,
       split_part(regress.err($$SELECT ops_daily_stats_backfill(regress.ds_d(2), regress.ds_d(0))$$), ':', 1) AS to_today,
       (SELECT count(*) FROM unnest(ARRAY['today', 'last7d', 'last30d']) p, LATERAL oracle.ds_stats_diff(p)) AS stats_mismatches;
SELECT (SELECT count(*) FROM opsmeter.daily_stats WHERE date = regress.ds_d(1)) AS yesterday_rows,
       (SELECT count(*) FROM opsmeter.daily_stats WHERE date = regress.ds_d(2)) AS day2_rows;
SET TimeZone = 'Asia/Kathmandu';
SELECT ops_daily_stats_backfill(regress.ds_d(4), regress.ds_d(1)) AS days_written;
SELECT * FROM oracle.ds_days_diff(regress.ds_d(10), regress.ds_d(1));
SELECT p AS period, d.* FROM unnest(ARRAY['today', 'last7d', 'last30d']) p, LATERAL oracle.ds_stats_diff(p) d;
SELECT split_part(regress.err($$SELECT ops_daily_stats_run(regress.ds_d(0))$$), ':', 1) AS today;
-- within one transaction (one now()) the periods are the same rows in both zones
BEGIN;
CREATE TEMP TABLE ds_ktm AS SELECT s.* FROM unnest(ARRAY['today', 'last7d', 'last30d']) p, LATERAL ops_stats(p) s;
SET LOCAL TimeZone = 'UTC';
SELECT count(*) AS periods, count(*) FILTER (WHERE k IS NOT DISTINCT FROM u) AS same_in_utc
  FROM ds_ktm k LEFT JOIN LATERAL ops_stats(k.period) u ON true;
ROLLBACK;
RESET TimeZone;

-- 11. A re-pointed source may hold NULLs: a NULL status counts in requests only, NULL tokens and
-- latencies sum as 0, a NULL model is the model ''. Days 41 and 40 ago (outside every period).
CREATE TABLE regress.ds_nullable (created_at timestamptz, model_name text, status_code integer,
                                  tokens_in bigint, tokens_out bigint, latency_ms numeric);
INSERT INTO regress.ds_nullable VALUES
    (regress.ds_ts(40, '00:00'), NULL, NULL, NULL, 5, 10.4),
    (regress.ds_ts(40, '01:00'), '', 200, 1, 1, NULL),
    (regress.ds_ts(40, '02:00'), 'b-model', 0, 2, NULL, 20.3),
    (regress.ds_ts(40, '03:00'), 'b-model', 199, NULL, NULL, 0.1),
    (regress.ds_ts(40, '04:00'), 'a-model', 399, 3, 4, 1),
    (regress.ds_ts(40, '05:00'), 'a-model', NULL, 100, 200, 7.25),
    (regress.ds_ts(40, '23:59:59.999999'), NULL, 304, 10, 20, 0),
    (regress.ds_ts(39, '00:00'), 'next-day', 500, 1000, 1000, 1000),  -- the next day
    (regress.ds_ts(41, '06:00'), NULL, NULL, NULL, NULL, NULL),
    (regress.ds_ts(41, '07:00'), NULL, NULL, NULL, NULL, NULL),
    (regress.ds_ts(41, '08:00'), NULL, NULL, NULL, NULL, NULL);
SELECT ops_set_source('log_records', 'regress.ds_nullable');
SELECT ops_daily_stats_backfill(regress.ds_d(41), regress.ds_d(40)) AS days_written;
SELECT date = regress.ds_d(40) AS day40, requests, success, failed, tokens_in, tokens_out, latency_sum_ms, top_models
  FROM opsmeter.daily_stats WHERE date IN (regress.ds_d(41), regress.ds_d(40)) ORDER BY date;
SELECT * FROM oracle.ds_days_diff(regress.ds_d(41), regress.ds_d(40), 'regress.ds_nullable');
SELECT ops_reset_source('log_records');
