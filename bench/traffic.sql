-- Generates one UTC day of realistic LLM-gateway traffic into opsmeter's default source tables.
-- Deterministic for a given (day, usage_rows, seed); replaces whatever the tables held.
--
--   psql -v day=2026-11-21 -v usage_rows=200000 -v seed=0.42 [-v groups=24 -v platforms=3] \
--        -f bench/traffic.sql
--
-- Shape: `groups` key groups (default 24) on `platforms` platforms (3: anthropic, openai, gemini,
-- split 10:8:6; 4: the same plus mistral, split 35:30:20:15) with skewed traffic;
-- a diurnal load curve peaking around 14:00 UTC; log-normal latencies with a per-platform and
-- per-group median and a 0.5% slow tail (clamped to 1 ms .. 10 min); time to first token for
-- streamed requests only; errors at ~5% of requests (429s, 529 overloads, 5xx, client 4xx,
-- business limits, errors with no group, and successful requests that recorded an upstream
-- failover); log_records for the daily stats with 14 models of skewed popularity. Rows are
-- inserted in created_at order, as a gateway appends its logs.
\set ON_ERROR_STOP 1
\if :{?day}
\else
SELECT ((now() AT TIME ZONE 'UTC')::date - 1)::text AS day \gset
\endif
\if :{?usage_rows}
\else
\set usage_rows 200000
\endif
\if :{?seed}
\else
\set seed 0.42
\endif
\if :{?groups}
\else
\set groups 24
\endif
\if :{?platforms}
\else
\set platforms 3
\endif
SELECT (:groups::int BETWEEN 1 AND 100000 AND :platforms::int IN (3, 4)) AS shape_ok \gset
\if :shape_ok
\else
DO $$ BEGIN RAISE EXCEPTION 'traffic.sql: groups must be 1 .. 100000 and platforms 3 or 4'; END $$;
\endif

BEGIN;
SELECT setseed(:seed);
TRUNCATE opsmeter.groups, opsmeter.usage_logs, opsmeter.error_logs, opsmeter.log_records;

INSERT INTO opsmeter.groups (id, name, platform)
SELECT g, format('%s-team-%s', p, g), p
  FROM generate_series(1, :groups) g,
       LATERAL (SELECT CASE WHEN :platforms = 3 THEN
                              CASE WHEN g <= round(:groups * 10 / 24.0) THEN 'anthropic'
                                   WHEN g <= round(:groups * 18 / 24.0) THEN 'openai'
                                   ELSE 'gemini' END
                            ELSE
                              CASE WHEN g <= round(:groups * 0.35) THEN 'anthropic'
                                   WHEN g <= round(:groups * 0.65) THEN 'openai'
                                   WHEN g <= round(:groups * 0.85) THEN 'gemini'
                                   ELSE 'mistral' END
                       END AS p) x;

-- day start as timestamptz, independent of the session TimeZone
SELECT (:'day' || ' 00:00:00+00')::timestamptz AS day0 \gset

-- One row of random draws per request; the columns below turn them into traffic.
CREATE TEMP TABLE draws ON COMMIT DROP AS
SELECT i, random() AS u_time, random() AS u_group, random() AS u_n1, random() AS u_n2,
       random() AS u_tail, random() AS u_ttft, random() AS u_model, random() AS u_cache
  FROM generate_series(1, :usage_rows) i;

-- diurnal(u): warps a uniform draw so load peaks at 14:00 UTC and is lowest at 02:00.
CREATE FUNCTION pg_temp.diurnal(u float8) RETURNS float8 LANGUAGE sql IMMUTABLE AS
$$ SELECT 86400 * ((u - 0.45 * sin(2 * pi() * u) / (2 * pi()) + 14.0 / 24)
                   - floor(u - 0.45 * sin(2 * pi() * u) / (2 * pi()) + 14.0 / 24)) $$;

INSERT INTO opsmeter.usage_logs (created_at, group_id, model, input_tokens, output_tokens,
                                 cache_creation_tokens, cache_read_tokens, duration_ms,
                                 first_token_ms)
SELECT :'day0'::timestamptz + make_interval(secs => pg_temp.diurnal(u_time)),
       gid,
       (CASE platform
          WHEN 'anthropic' THEN ARRAY['claude-sonnet-4', 'claude-opus-4', 'claude-haiku-4']
          WHEN 'openai' THEN ARRAY['gpt-5', 'gpt-5-mini', 'o4-mini']
          WHEN 'gemini' THEN ARRAY['gemini-2.5-pro', 'gemini-2.5-flash', 'gemini-2.5-flash']
          ELSE ARRAY['mistral-large', 'mistral-medium', 'codestral'] END)
         [1 + floor(3 * u_model ^ 1.5)::int],
       round(exp(7.2 + 1.1 * z1))::bigint,
       round(exp(5.6 + 0.7 * abs(z2)))::bigint,
       CASE WHEN u_cache < 0.05 THEN round(exp(7.0 + z2))::bigint ELSE 0 END,
       CASE WHEN u_cache > 0.6 THEN round(exp(7.5 + 0.8 * z1))::bigint ELSE 0 END,
       dur,
       CASE WHEN u_ttft < 0.25 THEN NULL
            ELSE greatest(1, round(dur * (0.04 + 0.3 * u_ttft)))::int END
  FROM (
    SELECT d.*, g.id AS gid, g.platform,
           sqrt(-2 * ln(1 - u_n1)) * cos(2 * pi() * u_n2) AS z1,
           sqrt(-2 * ln(1 - u_n1)) * sin(2 * pi() * u_n2) AS z2,
           least(600000, greatest(1, round(
               (CASE g.platform WHEN 'anthropic' THEN 2400 WHEN 'openai' THEN 1700 WHEN 'gemini' THEN 1100
                                ELSE 1400 END)
               * (0.7 + 0.07 * ((g.id * 37) % 10))
               * exp(0.85 * sqrt(-2 * ln(1 - u_n1)) * cos(2 * pi() * u_n2))
               * CASE WHEN u_tail < 0.005 THEN 12 ELSE 1 END)))::int AS dur
      FROM draws d
      JOIN opsmeter.groups g ON g.id = 1 + floor(:groups * d.u_group ^ 1.8)::int
  ) s
 ORDER BY 1;

-- Errors: about 5% of the request volume.
INSERT INTO opsmeter.error_logs (created_at, platform, group_id, model, status_code,
                                 upstream_status_code, error_owner, is_business_limited,
                                 error_message)
SELECT :'day0'::timestamptz + make_interval(secs => pg_temp.diurnal(u_time)),
       CASE WHEN no_group THEN (ARRAY['anthropic', 'openai', 'gemini', 'mistral'])[1 + floor(:platforms * u_group)::int]
            ELSE g.platform END,
       CASE WHEN no_group THEN NULL ELSE g.id END,
       NULL,
       k.status, k.upstream, k.owner, k.limited, k.msg
  FROM (SELECT d.*, d.u_cache < 0.03 AS no_group FROM draws d WHERE d.i % 20 = 0) d
  JOIN opsmeter.groups g ON g.id = 1 + floor(:groups * d.u_group ^ 1.8)::int
  CROSS JOIN LATERAL (
    SELECT * FROM (VALUES
      -- (upper bound of u_model, client status, upstream status, owner, business-limited, message)
      (0.28, 429, 429, 'provider', false, 'upstream rate limited'),
      (0.38, 503, 529, 'provider', false, 'upstream overloaded'),
      (0.52, 502, 500, 'provider', false, 'upstream internal error'),
      (0.58, 504, 504, 'provider', false, 'upstream timeout'),
      (0.74, 400, NULL, 'client', false, 'invalid request'),
      (0.80, 401, NULL, 'client', false, 'invalid api key'),
      (0.88, 429, NULL, 'platform', true, 'group quota exhausted'),
      (0.91, 403, NULL, 'platform', true, 'model not allowed for group'),
      (0.95, 500, NULL, 'platform', false, 'gateway error'),
      (1.01, 200, 529, 'provider', false, 'failover after upstream overload')
    ) v(ub, status, upstream, owner, limited, msg)
    WHERE d.u_model < v.ub ORDER BY v.ub LIMIT 1
  ) k
 ORDER BY 1;

-- log_records (daily stats input): half the request volume, 14 models.
INSERT INTO opsmeter.log_records (created_at, model_name, status_code, tokens_in, tokens_out,
                                  latency_ms)
SELECT :'day0'::timestamptz + make_interval(secs => pg_temp.diurnal(u_group)),
       (ARRAY['claude-sonnet-4', 'gpt-5', 'gemini-2.5-flash', 'claude-haiku-4', 'gpt-5-mini',
              'claude-opus-4', 'gemini-2.5-pro', 'o4-mini', 'deepseek-v3', 'qwen3-max',
              'grok-4', 'mistral-large', 'llama-4-maverick', 'kimi-k2'])
         [1 + floor(14 * u_model ^ 2.2)::int],
       CASE WHEN u_tail < 0.90 THEN 200 WHEN u_tail < 0.92 THEN 201 WHEN u_tail < 0.93 THEN 304
            WHEN u_tail < 0.96 THEN 429 WHEN u_tail < 0.975 THEN 400 WHEN u_tail < 0.99 THEN 502
            ELSE 0 END,
       round(exp(7.2 + 1.1 * sqrt(-2 * ln(1 - u_n1)) * cos(2 * pi() * u_n2)))::bigint,
       round(exp(5.6 + 0.7 * abs(sqrt(-2 * ln(1 - u_n1)) * sin(2 * pi() * u_n2))))::bigint,
       least(600000, greatest(1, round(1500 * exp(0.8 * sqrt(-2 * ln(1 - u_n1))
                                                       * cos(2 * pi() * u_n2)))))::bigint
  FROM draws WHERE i % 2 = 0
 ORDER BY 1;
COMMIT;
ANALYZE opsmeter.groups, opsmeter.usage_logs, opsmeter.error_logs, opsmeter.log_records;
