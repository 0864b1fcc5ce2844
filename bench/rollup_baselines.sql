-- Baselines for the ops rollup benchmark (SPEC §8), to time ops_upsert_hourly / ops_upsert_daily
-- against. Re-runnable (CREATE ... IF NOT EXISTS / CREATE OR REPLACE); needs, in this order:
--
--   CREATE EXTENSION opsmeter; CREATE EXTENSION tdigest;    -- tdigest in schema public
--   \i tests/oracle/rollups_oracle.sql                      -- only for the *_error functions
--   \i bench/rollup_baselines.sql
--   psql -v day=2026-11-21 -v usage_rows=2000000 -f bench/traffic.sql
--   SET max_parallel_workers_per_gather = 0;
--   SELECT bench.seed_upsert_hourly('2026-11-21 00:00+00', '2026-11-22 00:00+00');
--   SELECT bench.seed_upsert_daily('2026-11-21 00:00+00', '2026-11-22 00:00+00');
--   SELECT * FROM bench.floor_hourly('2026-11-21 00:00+00', '2026-11-22 00:00+00');
--   SELECT bench.tdigest_upsert_hourly('2026-11-21 00:00+00', '2026-11-22 00:00+00');
--   SELECT * FROM bench.seed_daily_error('2026-11-21', '2026-11-22');
--
-- What each baseline is:
--   seed_upsert_hourly / seed_upsert_daily  the seed's (ops_repo_preagg) rollups, same algorithm,
--       our own text: GROUPING SETS with percentile_cont over the raw rows, FULL OUTER JOIN of the
--       usage and error sides on COALESCE keys, INSERT ... ON CONFLICT DO UPDATE; daily from hourly
--       rows with the seed's approximation (weighted mean of p50/p90, max of p95/p99).
--   floor_hourly  the scan floor: one hash aggregation per log table at (UTC hour, group_id) with
--       plain count/sum/max; no percentiles, nothing written.
--   tdigest_upsert_hourly  opsmeter's design with the tdigest extension in place of ops_sketch:
--       one aggregation per log table at the finest grain, grains derived by merging digests.
--   seed_daily_error / rollup_error  relative error of stored percentiles against oracle.hourly /
--       oracle.daily (exact percentile_disc).
-- Planner settings, pinned per function so every baseline gets its best plan:
--   plan_cache_mode = force_custom_plan  every call is planned for its actual window (as opsmeter's
--       one-shot SPI queries are), not with a generic plan that guesses the window's selectivity;
--   enable_sort = off (floor_hourly, tdigest_upsert_hourly)  PostgreSQL has no statistics for
--       date_bin(created_at), so it expects one group per row and, at 2 M rows, sorts all of them
--       instead of hashing ~600 groups (3 s instead of 1 s); ops_upsert_hourly does the same.

CREATE SCHEMA IF NOT EXISTS bench;

-------------------------------------------------------------------------------------------------
-- The seed's tables (ops_metrics_hourly, ops_metrics_daily) and their COALESCE unique keys.

CREATE TABLE IF NOT EXISTS bench.seed_hourly (
    bucket_start                      timestamptz NOT NULL,
    platform                          text,
    group_id                          bigint,
    success_count                     bigint NOT NULL DEFAULT 0,
    error_count_total                 bigint NOT NULL DEFAULT 0,
    business_limited_count            bigint NOT NULL DEFAULT 0,
    error_count_sla                   bigint NOT NULL DEFAULT 0,
    upstream_error_count_excl_429_529 bigint NOT NULL DEFAULT 0,
    upstream_429_count                bigint NOT NULL DEFAULT 0,
    upstream_529_count                bigint NOT NULL DEFAULT 0,
    token_consumed                    bigint NOT NULL DEFAULT 0,
    duration_p50_ms                   integer,
    duration_p90_ms                   integer,
    duration_p95_ms                   integer,
    duration_p99_ms                   integer,
    duration_avg_ms                   double precision,
    duration_max_ms                   integer,
    ttft_p50_ms                       integer,
    ttft_p90_ms                       integer,
    ttft_p95_ms                       integer,
    ttft_p99_ms                       integer,
    ttft_avg_ms                       double precision,
    ttft_max_ms                       integer,
    computed_at                       timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE UNIQUE INDEX IF NOT EXISTS seed_hourly_key
    ON bench.seed_hourly (bucket_start, COALESCE(platform, ''), COALESCE(group_id, 0));

CREATE TABLE IF NOT EXISTS bench.seed_daily (
    bucket_date                       date NOT NULL,
    platform                          text,
    group_id                          bigint,
    success_count                     bigint NOT NULL DEFAULT 0,
    error_count_total                 bigint NOT NULL DEFAULT 0,
    business_limited_count            bigint NOT NULL DEFAULT 0,
    error_count_sla                   bigint NOT NULL DEFAULT 0,
    upstream_error_count_excl_429_529 bigint NOT NULL DEFAULT 0,
    upstream_429_count                bigint NOT NULL DEFAULT 0,
    upstream_529_count                bigint NOT NULL DEFAULT 0,
    token_consumed                    bigint NOT NULL DEFAULT 0,
    duration_p50_ms                   integer,
    duration_p90_ms                   integer,
    duration_p95_ms                   integer,
    duration_p99_ms                   integer,
    duration_avg_ms                   double precision,
    duration_max_ms                   integer,
    ttft_p50_ms                       integer,
    ttft_p90_ms                       integer,
    ttft_p95_ms                       integer,
    ttft_p99_ms                       integer,
    ttft_avg_ms                       double precision,
    ttft_max_ms                       integer,
    computed_at                       timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE UNIQUE INDEX IF NOT EXISTS seed_daily_key
    ON bench.seed_daily (bucket_date, COALESCE(platform, ''), COALESCE(group_id, 0));

-------------------------------------------------------------------------------------------------
-- seed_upsert_hourly: the seed's UpsertHourlyMetrics. Rows of [start_time, end_time) exactly (no
-- widening); a NULL, empty or inverted window does nothing and returns 0. Returns rows inserted or
-- updated. Known failure of the seed's algorithm, kept on purpose: an error row with a NULL platform
-- yields a second (hour, NULL, NULL) row that collides with the overall row, and a group with id 0
-- collides with its platform row, so the INSERT fails with "ON CONFLICT DO UPDATE command cannot
-- affect row a second time" (SQLSTATE 21000).
CREATE OR REPLACE FUNCTION bench.seed_upsert_hourly(start_time timestamptz, end_time timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    written bigint;
BEGIN
    IF start_time IS NULL OR end_time IS NULL OR end_time <= start_time THEN
        RETURN 0;
    END IF;

    WITH
    -- successful requests of known groups, with the group's platform
    usage_rows AS (
        SELECT date_trunc('hour', ul.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour,
               g.platform,
               ul.group_id,
               ul.duration_ms,
               ul.first_token_ms,
               ul.input_tokens + ul.output_tokens + ul.cache_creation_tokens + ul.cache_read_tokens
                   AS tokens
          FROM opsmeter.usage_logs ul
          JOIN opsmeter.groups g ON g.id = ul.group_id
         WHERE ul.created_at >= start_time AND ul.created_at < end_time
    ),
    usage_grains AS (
        SELECT hour,
               CASE WHEN GROUPING(platform) = 1 THEN NULL ELSE platform END AS platform,
               CASE WHEN GROUPING(group_id) = 1 THEN NULL ELSE group_id END AS group_id,
               count(*) AS success_count,
               COALESCE(sum(tokens), 0) AS token_consumed,
               percentile_cont(0.50) WITHIN GROUP (ORDER BY duration_ms) FILTER (WHERE duration_ms IS NOT NULL) AS d50,
               percentile_cont(0.90) WITHIN GROUP (ORDER BY duration_ms) FILTER (WHERE duration_ms IS NOT NULL) AS d90,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) FILTER (WHERE duration_ms IS NOT NULL) AS d95,
               percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) FILTER (WHERE duration_ms IS NOT NULL) AS d99,
               avg(duration_ms) FILTER (WHERE duration_ms IS NOT NULL) AS davg,
               max(duration_ms) AS dmax,
               percentile_cont(0.50) WITHIN GROUP (ORDER BY first_token_ms) FILTER (WHERE first_token_ms IS NOT NULL) AS t50,
               percentile_cont(0.90) WITHIN GROUP (ORDER BY first_token_ms) FILTER (WHERE first_token_ms IS NOT NULL) AS t90,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY first_token_ms) FILTER (WHERE first_token_ms IS NOT NULL) AS t95,
               percentile_cont(0.99) WITHIN GROUP (ORDER BY first_token_ms) FILTER (WHERE first_token_ms IS NOT NULL) AS t99,
               avg(first_token_ms) FILTER (WHERE first_token_ms IS NOT NULL) AS tavg,
               max(first_token_ms) AS tmax
          FROM usage_rows
         GROUP BY GROUPING SETS ((hour), (hour, platform), (hour, platform, group_id))
    ),
    -- failed requests with their own platform and group
    error_rows AS (
        SELECT date_trunc('hour', el.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour,
               el.platform,
               el.group_id,
               el.is_business_limited,
               el.error_owner,
               el.status_code,
               COALESCE(el.upstream_status_code, el.status_code, 0) AS effective_status
          FROM opsmeter.error_logs el
         WHERE el.created_at >= start_time AND el.created_at < end_time
    ),
    error_grains AS (
        SELECT hour,
               CASE WHEN GROUPING(platform) = 1 THEN NULL ELSE platform END AS platform,
               CASE WHEN GROUPING(group_id) = 1 THEN NULL ELSE group_id END AS group_id,
               count(*) FILTER (WHERE COALESCE(status_code, 0) >= 400) AS error_count_total,
               count(*) FILTER (WHERE COALESCE(status_code, 0) >= 400 AND is_business_limited) AS business_limited_count,
               count(*) FILTER (WHERE COALESCE(status_code, 0) >= 400 AND NOT is_business_limited) AS error_count_sla,
               count(*) FILTER (WHERE error_owner = 'provider' AND NOT is_business_limited
                                  AND COALESCE(effective_status, 0) NOT IN (429, 529)) AS upstream_error_count_excl_429_529,
               count(*) FILTER (WHERE error_owner = 'provider' AND NOT is_business_limited
                                  AND COALESCE(effective_status, 0) = 429) AS upstream_429_count,
               count(*) FILTER (WHERE error_owner = 'provider' AND NOT is_business_limited
                                  AND COALESCE(effective_status, 0) = 529) AS upstream_529_count
          FROM error_rows
         GROUP BY GROUPING SETS ((hour), (hour, platform), (hour, platform, group_id))
        -- group rows need a group; errors without one stay in the overall and platform rows
        HAVING GROUPING(group_id) = 1 OR group_id IS NOT NULL
    ),
    -- both sides matched on the same COALESCE key the unique index uses
    joined AS (
        SELECT COALESCE(u.hour, e.hour) AS hour,
               COALESCE(u.platform, e.platform) AS platform,
               COALESCE(u.group_id, e.group_id) AS group_id,
               COALESCE(u.success_count, 0) AS success_count,
               COALESCE(e.error_count_total, 0) AS error_count_total,
               COALESCE(e.business_limited_count, 0) AS business_limited_count,
               COALESCE(e.error_count_sla, 0) AS error_count_sla,
               COALESCE(e.upstream_error_count_excl_429_529, 0) AS upstream_error_count_excl_429_529,
               COALESCE(e.upstream_429_count, 0) AS upstream_429_count,
               COALESCE(e.upstream_529_count, 0) AS upstream_529_count,
               COALESCE(u.token_consumed, 0) AS token_consumed,
               u.d50, u.d90, u.d95, u.d99, u.davg, u.dmax,
               u.t50, u.t90, u.t95, u.t99, u.tavg, u.tmax
          FROM usage_grains u
          FULL OUTER JOIN error_grains e
            ON u.hour = e.hour
           AND COALESCE(u.platform, '') = COALESCE(e.platform, '')
           AND COALESCE(u.group_id, 0) = COALESCE(e.group_id, 0)
    )
    INSERT INTO bench.seed_hourly AS h (
        bucket_start, platform, group_id,
        success_count, error_count_total, business_limited_count, error_count_sla,
        upstream_error_count_excl_429_529, upstream_429_count, upstream_529_count, token_consumed,
        duration_p50_ms, duration_p90_ms, duration_p95_ms, duration_p99_ms, duration_avg_ms, duration_max_ms,
        ttft_p50_ms, ttft_p90_ms, ttft_p95_ms, ttft_p99_ms, ttft_avg_ms, ttft_max_ms,
        computed_at)
    SELECT hour, NULLIF(platform, ''), group_id,
           success_count, error_count_total, business_limited_count, error_count_sla,
           upstream_error_count_excl_429_529, upstream_429_count, upstream_529_count, token_consumed,
           d50::int, d90::int, d95::int, d99::int, davg, dmax::int,
           t50::int, t90::int, t95::int, t99::int, tavg, tmax::int,
           now()
      FROM joined
     WHERE hour IS NOT NULL
       AND (platform IS NULL OR platform <> '')
    ON CONFLICT (bucket_start, COALESCE(platform, ''), COALESCE(group_id, 0)) DO UPDATE SET
        success_count = EXCLUDED.success_count,
        error_count_total = EXCLUDED.error_count_total,
        business_limited_count = EXCLUDED.business_limited_count,
        error_count_sla = EXCLUDED.error_count_sla,
        upstream_error_count_excl_429_529 = EXCLUDED.upstream_error_count_excl_429_529,
        upstream_429_count = EXCLUDED.upstream_429_count,
        upstream_529_count = EXCLUDED.upstream_529_count,
        token_consumed = EXCLUDED.token_consumed,
        duration_p50_ms = EXCLUDED.duration_p50_ms,
        duration_p90_ms = EXCLUDED.duration_p90_ms,
        duration_p95_ms = EXCLUDED.duration_p95_ms,
        duration_p99_ms = EXCLUDED.duration_p99_ms,
        duration_avg_ms = EXCLUDED.duration_avg_ms,
        duration_max_ms = EXCLUDED.duration_max_ms,
        ttft_p50_ms = EXCLUDED.ttft_p50_ms,
        ttft_p90_ms = EXCLUDED.ttft_p90_ms,
        ttft_p95_ms = EXCLUDED.ttft_p95_ms,
        ttft_p99_ms = EXCLUDED.ttft_p99_ms,
        ttft_avg_ms = EXCLUDED.ttft_avg_ms,
        ttft_max_ms = EXCLUDED.ttft_max_ms,
        computed_at = now();

    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN written;
END
$$;
COMMENT ON FUNCTION bench.seed_upsert_hourly(timestamptz, timestamptz) IS
    'benchmark baseline: the seed''s hourly rollup (GROUPING SETS + percentile_cont, FULL JOIN, upsert) of [start_time, end_time) into bench.seed_hourly; returns rows written';

-------------------------------------------------------------------------------------------------
-- seed_upsert_daily: the seed's UpsertDailyMetrics. Days (UTC dates) of the bench.seed_hourly rows
-- with bucket_start in [start_time, end_time), upserted into bench.seed_daily. Counts and the
-- mean are exact sums / weighted means; p50 and p90 are the mean of the hourly values weighted by
-- success_count, p95 and p99 the max of the hourly values (the seed's approximation). Returns rows
-- inserted or updated; a NULL, empty or inverted window returns 0.
CREATE OR REPLACE FUNCTION bench.seed_upsert_daily(start_time timestamptz, end_time timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    written bigint;
BEGIN
    IF start_time IS NULL OR end_time IS NULL OR end_time <= start_time THEN
        RETURN 0;
    END IF;

    INSERT INTO bench.seed_daily AS d (
        bucket_date, platform, group_id,
        success_count, error_count_total, business_limited_count, error_count_sla,
        upstream_error_count_excl_429_529, upstream_429_count, upstream_529_count, token_consumed,
        duration_p50_ms, duration_p90_ms, duration_p95_ms, duration_p99_ms, duration_avg_ms, duration_max_ms,
        ttft_p50_ms, ttft_p90_ms, ttft_p95_ms, ttft_p99_ms, ttft_avg_ms, ttft_max_ms,
        computed_at)
    SELECT (h.bucket_start AT TIME ZONE 'UTC')::date,
           h.platform,
           h.group_id,
           COALESCE(sum(h.success_count), 0),
           COALESCE(sum(h.error_count_total), 0),
           COALESCE(sum(h.business_limited_count), 0),
           COALESCE(sum(h.error_count_sla), 0),
           COALESCE(sum(h.upstream_error_count_excl_429_529), 0),
           COALESCE(sum(h.upstream_429_count), 0),
           COALESCE(sum(h.upstream_529_count), 0),
           COALESCE(sum(h.token_consumed), 0),
           -- weighted by success_count (requests), for p50/p90 and the mean alike
           round(sum(h.duration_p50_ms::float8 * h.success_count) FILTER (WHERE h.duration_p50_ms IS NOT NULL)
                 / NULLIF(sum(h.success_count) FILTER (WHERE h.duration_p50_ms IS NOT NULL), 0))::int,
           round(sum(h.duration_p90_ms::float8 * h.success_count) FILTER (WHERE h.duration_p90_ms IS NOT NULL)
                 / NULLIF(sum(h.success_count) FILTER (WHERE h.duration_p90_ms IS NOT NULL), 0))::int,
           max(h.duration_p95_ms),
           max(h.duration_p99_ms),
           sum(h.duration_avg_ms * h.success_count) FILTER (WHERE h.duration_avg_ms IS NOT NULL)
               / NULLIF(sum(h.success_count) FILTER (WHERE h.duration_avg_ms IS NOT NULL), 0),
           max(h.duration_max_ms),
           round(sum(h.ttft_p50_ms::float8 * h.success_count) FILTER (WHERE h.ttft_p50_ms IS NOT NULL)
                 / NULLIF(sum(h.success_count) FILTER (WHERE h.ttft_p50_ms IS NOT NULL), 0))::int,
           round(sum(h.ttft_p90_ms::float8 * h.success_count) FILTER (WHERE h.ttft_p90_ms IS NOT NULL)
                 / NULLIF(sum(h.success_count) FILTER (WHERE h.ttft_p90_ms IS NOT NULL), 0))::int,
           max(h.ttft_p95_ms),
           max(h.ttft_p99_ms),
           sum(h.ttft_avg_ms * h.success_count) FILTER (WHERE h.ttft_avg_ms IS NOT NULL)
               / NULLIF(sum(h.success_count) FILTER (WHERE h.ttft_avg_ms IS NOT NULL), 0),
           max(h.ttft_max_ms),
           now()
      FROM bench.seed_hourly h
     WHERE h.bucket_start >= start_time AND h.bucket_start < end_time
     GROUP BY 1, 2, 3
    ON CONFLICT (bucket_date, COALESCE(platform, ''), COALESCE(group_id, 0)) DO UPDATE SET
        success_count = EXCLUDED.success_count,
        error_count_total = EXCLUDED.error_count_total,
        business_limited_count = EXCLUDED.business_limited_count,
        error_count_sla = EXCLUDED.error_count_sla,
        upstream_error_count_excl_429_529 = EXCLUDED.upstream_error_count_excl_429_529,
        upstream_429_count = EXCLUDED.upstream_429_count,
        upstream_529_count = EXCLUDED.upstream_529_count,
        token_consumed = EXCLUDED.token_consumed,
        duration_p50_ms = EXCLUDED.duration_p50_ms,
        duration_p90_ms = EXCLUDED.duration_p90_ms,
        duration_p95_ms = EXCLUDED.duration_p95_ms,
        duration_p99_ms = EXCLUDED.duration_p99_ms,
        duration_avg_ms = EXCLUDED.duration_avg_ms,
        duration_max_ms = EXCLUDED.duration_max_ms,
        ttft_p50_ms = EXCLUDED.ttft_p50_ms,
        ttft_p90_ms = EXCLUDED.ttft_p90_ms,
        ttft_p95_ms = EXCLUDED.ttft_p95_ms,
        ttft_p99_ms = EXCLUDED.ttft_p99_ms,
        ttft_avg_ms = EXCLUDED.ttft_avg_ms,
        ttft_max_ms = EXCLUDED.ttft_max_ms,
        computed_at = now();

    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN written;
END
$$;
COMMENT ON FUNCTION bench.seed_upsert_daily(timestamptz, timestamptz) IS
    'benchmark baseline: the seed''s daily rollup from bench.seed_hourly rows in [start_time, end_time) (weighted mean of p50/p90, max of p95/p99) into bench.seed_daily; returns rows written';

-------------------------------------------------------------------------------------------------
-- floor_hourly: the least work any hourly rollup must do. One scan of usage_logs and one of
-- error_logs in [start_time, end_time), each a single hash aggregation at (UTC hour, group_id)
-- with plain count/sum/max (usage: requests, tokens, count/sum/max of duration and TTFT; errors:
-- the filtered counts); no join, no percentiles, nothing written. Returns the number of
-- (hour, group_id) groups of both tables together. The whole-row counts keep every aggregate
-- alive (the planner drops subquery columns nobody reads); enable_sort = off makes the
-- aggregations hash (see the header).
CREATE OR REPLACE FUNCTION bench.floor_hourly(start_time timestamptz, end_time timestamptz)
RETURNS SETOF bigint
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
SET enable_sort = off
AS $$
BEGIN
    -- one statement through RETURN QUERY, which PostgreSQL may run with parallel workers
    -- (a SELECT ... INTO in PL/pgSQL never is)
    RETURN QUERY SELECT
    (SELECT count(u.*)
      FROM (SELECT date_bin('1 hour', ul.created_at, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS hour,
                   ul.group_id,
                   count(*) AS requests,
                   sum(ul.input_tokens + ul.output_tokens + ul.cache_creation_tokens + ul.cache_read_tokens) AS tokens,
                   count(ul.duration_ms) AS n_duration,
                   sum(ul.duration_ms) AS sum_duration,
                   max(ul.duration_ms) AS max_duration,
                   count(ul.first_token_ms) AS n_ttft,
                   sum(ul.first_token_ms) AS sum_ttft,
                   max(ul.first_token_ms) AS max_ttft
              FROM opsmeter.usage_logs ul
             WHERE ul.created_at >= start_time AND ul.created_at < end_time
             GROUP BY 1, 2) u)
    +
    (SELECT count(e.*)
      FROM (SELECT date_bin('1 hour', el.created_at, TIMESTAMPTZ '2000-01-03 00:00:00+00') AS hour,
                   el.group_id,
                   count(*) FILTER (WHERE COALESCE(el.status_code, 0) >= 400) AS errors,
                   count(*) FILTER (WHERE COALESCE(el.status_code, 0) >= 400 AND el.is_business_limited) AS limited,
                   count(*) FILTER (WHERE COALESCE(el.status_code, 0) >= 400 AND NOT el.is_business_limited) AS sla,
                   count(*) FILTER (WHERE el.error_owner = 'provider' AND NOT el.is_business_limited
                                      AND COALESCE(el.upstream_status_code, el.status_code, 0) NOT IN (429, 529)) AS upstream,
                   count(*) FILTER (WHERE el.error_owner = 'provider' AND NOT el.is_business_limited
                                      AND COALESCE(el.upstream_status_code, el.status_code, 0) = 429) AS up429,
                   count(*) FILTER (WHERE el.error_owner = 'provider' AND NOT el.is_business_limited
                                      AND COALESCE(el.upstream_status_code, el.status_code, 0) = 529) AS up529
              FROM opsmeter.error_logs el
             WHERE el.created_at >= start_time AND el.created_at < end_time
             GROUP BY 1, 2) e);
END
$$;
COMMENT ON FUNCTION bench.floor_hourly(timestamptz, timestamptz) IS
    'benchmark floor: one hash aggregation (count/sum/max at UTC hour x group_id) per log table over [start_time, end_time), nothing written; returns the number of groups';

-------------------------------------------------------------------------------------------------
-- tdigest: opsmeter's design with the tdigest extension's digests in place of ops_sketch.

CREATE TABLE IF NOT EXISTS bench.tdigest_hourly (
    bucket_start                      timestamptz NOT NULL,
    platform                          text,
    group_id                          bigint,
    success_count                     bigint NOT NULL DEFAULT 0,
    error_count_total                 bigint NOT NULL DEFAULT 0,
    business_limited_count            bigint NOT NULL DEFAULT 0,
    error_count_sla                   bigint NOT NULL DEFAULT 0,
    upstream_error_count_excl_429_529 bigint NOT NULL DEFAULT 0,
    upstream_429_count                bigint NOT NULL DEFAULT 0,
    upstream_529_count                bigint NOT NULL DEFAULT 0,
    token_consumed                    bigint NOT NULL DEFAULT 0,
    duration_p50_ms                   integer,
    duration_p90_ms                   integer,
    duration_p95_ms                   integer,
    duration_p99_ms                   integer,
    duration_avg_ms                   double precision,
    duration_max_ms                   integer,
    ttft_p50_ms                       integer,
    ttft_p90_ms                       integer,
    ttft_p95_ms                       integer,
    ttft_p99_ms                       integer,
    ttft_avg_ms                       double precision,
    ttft_max_ms                       integer,
    computed_at                       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    duration_digest                   public.tdigest,
    ttft_digest                       public.tdigest
);
CREATE UNIQUE INDEX IF NOT EXISTS tdigest_hourly_key
    ON bench.tdigest_hourly (bucket_start, platform, group_id) NULLS NOT DISTINCT;

-- tdigest_upsert_hourly: [start_time, end_time) widened to whole UTC hours (as ops_upsert_hourly
-- does); a NULL, empty or inverted window does nothing and returns 0. Those hours of
-- bench.tdigest_hourly are deleted and rebuilt from:
--   usage_logs  one hash aggregation at (hour, group_id): count, tokens, count/sum/max and
--               tdigest(x, 100) of duration and TTFT; joined (small) to groups for the platform;
--   error_logs  one aggregation at (hour, platform, group_id) with the seed's FILTERed counts;
-- UNION ALL, then the three grains by GROUPING SETS, summing counts and merging digests, with the
-- oracle's grain rules (platform rows need a non-empty platform, group rows also a group_id).
-- Percentiles are tdigest_percentile of the merged digest rounded to int; avg and max exact.
-- Returns rows written. Runs with enable_sort = off (hash aggregation, as opsmeter; see the header).
CREATE OR REPLACE FUNCTION bench.tdigest_upsert_hourly(start_time timestamptz, end_time timestamptz)
RETURNS bigint
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_custom_plan
SET enable_sort = off
AS $$
DECLARE
    origin CONSTANT timestamptz := TIMESTAMPTZ '2000-01-03 00:00:00+00';
    lo timestamptz;
    hi timestamptz;
    written bigint;
BEGIN
    IF start_time IS NULL OR end_time IS NULL OR end_time <= start_time THEN
        RETURN 0;
    END IF;
    lo := date_bin('1 hour', start_time, origin);
    hi := date_bin('1 hour', end_time - INTERVAL '1 microsecond', origin) + INTERVAL '1 hour';

    DELETE FROM bench.tdigest_hourly WHERE bucket_start >= lo AND bucket_start < hi;

    INSERT INTO bench.tdigest_hourly (
        bucket_start, platform, group_id,
        success_count, error_count_total, business_limited_count, error_count_sla,
        upstream_error_count_excl_429_529, upstream_429_count, upstream_529_count, token_consumed,
        duration_p50_ms, duration_p90_ms, duration_p95_ms, duration_p99_ms, duration_avg_ms, duration_max_ms,
        ttft_p50_ms, ttft_p90_ms, ttft_p95_ms, ttft_p99_ms, ttft_avg_ms, ttft_max_ms,
        computed_at, duration_digest, ttft_digest)
    WITH
    u AS (
        SELECT date_bin('1 hour', ul.created_at, origin) AS hour,
               ul.group_id,
               count(*) AS success_count,
               sum(ul.input_tokens + ul.output_tokens + ul.cache_creation_tokens + ul.cache_read_tokens) AS tokens,
               count(ul.duration_ms) AS d_n, sum(ul.duration_ms) AS d_sum, max(ul.duration_ms) AS d_max,
               public.tdigest(ul.duration_ms::float8, 100) AS d_digest,
               count(ul.first_token_ms) AS t_n, sum(ul.first_token_ms) AS t_sum, max(ul.first_token_ms) AS t_max,
               public.tdigest(ul.first_token_ms::float8, 100) AS t_digest
          FROM opsmeter.usage_logs ul
         WHERE ul.created_at >= lo AND ul.created_at < hi AND ul.group_id IS NOT NULL
         GROUP BY 1, 2
    ),
    e AS (
        SELECT date_bin('1 hour', el.created_at, origin) AS hour,
               NULLIF(el.platform, '') AS platform,
               el.group_id,
               count(*) FILTER (WHERE COALESCE(el.status_code, 0) >= 400) AS error_count_total,
               count(*) FILTER (WHERE COALESCE(el.status_code, 0) >= 400 AND el.is_business_limited) AS business_limited_count,
               count(*) FILTER (WHERE COALESCE(el.status_code, 0) >= 400 AND NOT el.is_business_limited) AS error_count_sla,
               count(*) FILTER (WHERE el.error_owner = 'provider' AND NOT el.is_business_limited
                                  AND COALESCE(el.upstream_status_code, el.status_code, 0) NOT IN (429, 529)) AS upstream_error_count_excl_429_529,
               count(*) FILTER (WHERE el.error_owner = 'provider' AND NOT el.is_business_limited
                                  AND COALESCE(el.upstream_status_code, el.status_code, 0) = 429) AS upstream_429_count,
               count(*) FILTER (WHERE el.error_owner = 'provider' AND NOT el.is_business_limited
                                  AND COALESCE(el.upstream_status_code, el.status_code, 0) = 529) AS upstream_529_count
          FROM opsmeter.error_logs el
         WHERE el.created_at >= lo AND el.created_at < hi
         GROUP BY 1, 2, 3
    ),
    fine AS (
        SELECT u.hour, NULLIF(g.platform, '') AS platform, u.group_id,
               u.success_count, 0::bigint AS error_count_total, 0::bigint AS business_limited_count,
               0::bigint AS error_count_sla, 0::bigint AS upstream_error_count_excl_429_529,
               0::bigint AS upstream_429_count, 0::bigint AS upstream_529_count,
               u.tokens, u.d_n, u.d_sum, u.d_max, u.d_digest, u.t_n, u.t_sum, u.t_max, u.t_digest
          FROM u
          JOIN opsmeter.groups g ON g.id = u.group_id
        UNION ALL
        SELECT e.hour, e.platform, e.group_id,
               0, e.error_count_total, e.business_limited_count, e.error_count_sla,
               e.upstream_error_count_excl_429_529, e.upstream_429_count, e.upstream_529_count,
               NULL, 0, NULL, NULL, NULL, 0, NULL, NULL, NULL
          FROM e
    ),
    grains AS (
        SELECT hour, platform, group_id,
               sum(success_count)::bigint AS success_count,
               sum(error_count_total)::bigint AS error_count_total,
               sum(business_limited_count)::bigint AS business_limited_count,
               sum(error_count_sla)::bigint AS error_count_sla,
               sum(upstream_error_count_excl_429_529)::bigint AS upstream_error_count_excl_429_529,
               sum(upstream_429_count)::bigint AS upstream_429_count,
               sum(upstream_529_count)::bigint AS upstream_529_count,
               COALESCE(sum(tokens), 0)::bigint AS token_consumed,
               sum(d_sum)::float8 / NULLIF(sum(d_n), 0) AS d_avg,
               max(d_max) AS d_max,
               public.tdigest(d_digest) AS d_digest,
               public.tdigest_percentile(d_digest, ARRAY[0.5, 0.9, 0.95, 0.99]) AS d_q,
               sum(t_sum)::float8 / NULLIF(sum(t_n), 0) AS t_avg,
               max(t_max) AS t_max,
               public.tdigest(t_digest) AS t_digest,
               public.tdigest_percentile(t_digest, ARRAY[0.5, 0.9, 0.95, 0.99]) AS t_q
          FROM fine
         GROUP BY GROUPING SETS ((hour), (hour, platform), (hour, platform, group_id))
        HAVING GROUPING(platform) = 1
            OR (platform IS NOT NULL AND (GROUPING(group_id) = 1 OR group_id IS NOT NULL))
    )
    SELECT hour, platform, group_id,
           success_count, error_count_total, business_limited_count, error_count_sla,
           upstream_error_count_excl_429_529, upstream_429_count, upstream_529_count, token_consumed,
           round(d_q[1])::int, round(d_q[2])::int, round(d_q[3])::int, round(d_q[4])::int, d_avg, d_max,
           round(t_q[1])::int, round(t_q[2])::int, round(t_q[3])::int, round(t_q[4])::int, t_avg, t_max,
           now(), d_digest, t_digest
      FROM grains;

    GET DIAGNOSTICS written = ROW_COUNT;
    RETURN written;
END
$$;
COMMENT ON FUNCTION bench.tdigest_upsert_hourly(timestamptz, timestamptz) IS
    'benchmark baseline: opsmeter''s hourly rollup design (finest-grain aggregation, grains by merging) with tdigest(x, 100); replaces the whole UTC hours of [start_time, end_time) in bench.tdigest_hourly; returns rows written';

-------------------------------------------------------------------------------------------------
-- Accuracy against the exact oracle (tests/oracle/rollups_oracle.sql must be loaded).

-- rollup_error: for a table with the seed's columns (bench.seed_hourly, bench.tdigest_hourly,
-- opsmeter.metrics_hourly, or the daily ones) and grain 'hourly' (key bucket_start, compared with
-- oracle.hourly(start_time, end_time)) or 'daily' (key bucket_date, compared with
-- oracle.daily(start_time::date, end_time::date) in UTC), one row per latency column: the number of
-- rows of both sides where both values are non-NULL, the max and mean relative error
-- |stored - exact| / exact in percent, the row with the max error, and how many rows have a value
-- on one side only. Rows present on one side only are ignored.
CREATE OR REPLACE FUNCTION bench.rollup_error(tbl regclass, grain text,
                                              start_time timestamptz, end_time timestamptz)
RETURNS TABLE (metric text, compared bigint, max_rel_error_pct float8, mean_rel_error_pct float8,
               worst text, null_mismatches bigint)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    key text;
    exact text;
BEGIN
    IF grain = 'hourly' THEN
        key := 'bucket_start';
        exact := 'oracle.hourly($1, $2)';
    ELSIF grain = 'daily' THEN
        key := 'bucket_date';
        exact := 'oracle.daily(($1 AT TIME ZONE ''UTC'')::date, ($2 AT TIME ZONE ''UTC'')::date)';
    ELSE
        RAISE EXCEPTION 'grain must be ''hourly'' or ''daily'', got %', grain USING ERRCODE = '22023';
    END IF;

    RETURN QUERY EXECUTE format($q$
        WITH pairs AS (
            SELECT t.%1$I::text || ' ' || COALESCE(t.platform, '*') || ' ' || COALESCE(t.group_id::text, '*') AS row_key,
                   m.ord, m.metric, m.stored, m.exact
              FROM %2$s t
              JOIN %3$s o
                ON o.%1$I = t.%1$I
               AND o.platform IS NOT DISTINCT FROM t.platform
               AND o.group_id IS NOT DISTINCT FROM t.group_id
             CROSS JOIN LATERAL (VALUES
                (1, 'duration_p50_ms', t.duration_p50_ms::float8, o.duration_p50_ms),
                (2, 'duration_p90_ms', t.duration_p90_ms::float8, o.duration_p90_ms),
                (3, 'duration_p95_ms', t.duration_p95_ms::float8, o.duration_p95_ms),
                (4, 'duration_p99_ms', t.duration_p99_ms::float8, o.duration_p99_ms),
                (5, 'duration_avg_ms', t.duration_avg_ms::float8, o.duration_avg_ms),
                (6, 'ttft_p50_ms', t.ttft_p50_ms::float8, o.ttft_p50_ms),
                (7, 'ttft_p90_ms', t.ttft_p90_ms::float8, o.ttft_p90_ms),
                (8, 'ttft_p95_ms', t.ttft_p95_ms::float8, o.ttft_p95_ms),
                (9, 'ttft_p99_ms', t.ttft_p99_ms::float8, o.ttft_p99_ms),
                (10, 'ttft_avg_ms', t.ttft_avg_ms::float8, o.ttft_avg_ms)) m(ord, metric, stored, exact)
             WHERE t.%1$I >= %4$s AND t.%1$I < %5$s
        ),
        errs AS (
            SELECT p.*,
                   CASE WHEN p.stored IS NULL OR p.exact IS NULL THEN NULL
                        WHEN p.exact = 0 THEN CASE WHEN p.stored = 0 THEN 0 ELSE 'Infinity'::float8 END
                        ELSE 100 * abs(p.stored - p.exact) / abs(p.exact) END AS err
              FROM pairs p
        )
        SELECT e.metric,
               count(e.err),
               max(e.err),
               avg(e.err),
               (array_agg(e.row_key || ': ' || e.stored || ' vs exact ' || e.exact
                          ORDER BY e.err DESC NULLS LAST))[1],
               count(*) FILTER (WHERE (e.stored IS NULL) <> (e.exact IS NULL))
          FROM errs e
         GROUP BY e.ord, e.metric
         ORDER BY e.ord
        $q$,
        key, tbl, exact,
        CASE WHEN grain = 'hourly' THEN '$1' ELSE '($1 AT TIME ZONE ''UTC'')::date' END,
        CASE WHEN grain = 'hourly' THEN '$2' ELSE '($2 AT TIME ZONE ''UTC'')::date' END)
    USING start_time, end_time;
END
$$;
COMMENT ON FUNCTION bench.rollup_error(regclass, text, timestamptz, timestamptz) IS
    'benchmark accuracy: per latency column, max and mean relative error (%) of a rollup table against the exact oracle (oracle.hourly / oracle.daily) over [start_time, end_time)';

-- seed_daily_error: the seed's daily approximation (bench.seed_daily) against exact daily
-- percentiles (oracle.daily), days in [start_day, end_day), over all grains: one row per
-- latency column with its max relative error in percent (and the rest of rollup_error's columns).
CREATE OR REPLACE FUNCTION bench.seed_daily_error(start_day date, end_day date)
RETURNS TABLE (metric text, compared bigint, max_rel_error_pct float8, mean_rel_error_pct float8,
               worst text, null_mismatches bigint)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT * FROM bench.rollup_error('bench.seed_daily'::regclass, 'daily',
                                 $1::timestamp AT TIME ZONE 'UTC', $2::timestamp AT TIME ZONE 'UTC')
$$;
COMMENT ON FUNCTION bench.seed_daily_error(date, date) IS
    'benchmark accuracy: relative error (%) of the seed''s daily percentile approximation in bench.seed_daily against exact daily percentiles (oracle.daily), days in [start_day, end_day)';
