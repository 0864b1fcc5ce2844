-- opsmeter 0.2.0 -> 0.3.0: adds the ops rollups (SPEC section 2): tables opsmeter.metrics_hourly
-- and opsmeter.metrics_daily, type opsmeter.metrics_row, and the functions ops_upsert_hourly,
-- ops_upsert_daily, ops_latest_hourly_bucket, ops_latest_daily_bucket, ops_rollup_catch_up,
-- ops_metrics_query and ops_metrics. Nothing existing changes.
\echo Use "ALTER EXTENSION opsmeter UPDATE TO '0.3.0'" to load this file. \quit

CREATE TABLE opsmeter.metrics_hourly (
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
    duration_sketch                   ops_sketch,
    ttft_sketch                       ops_sketch,
    computed_at                       timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE UNIQUE INDEX metrics_hourly_key
    ON opsmeter.metrics_hourly (bucket_start, (COALESCE(platform, '')), (COALESCE(group_id, 0)));
COMMENT ON TABLE opsmeter.metrics_hourly IS 'opsmeter hourly ops metrics (UTC hours) at three grains: overall (platform and group_id NULL), platform, and (platform, group_id); written by ops_upsert_hourly()';
COMMENT ON INDEX opsmeter.metrics_hourly_key IS 'opsmeter: one row per hour and grain, as the seed''s COALESCE-based unique key';
SELECT pg_catalog.pg_extension_config_dump('opsmeter.metrics_hourly', '');

CREATE TABLE opsmeter.metrics_daily (
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
    duration_sketch                   ops_sketch,
    ttft_sketch                       ops_sketch,
    computed_at                       timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE UNIQUE INDEX metrics_daily_key
    ON opsmeter.metrics_daily (bucket_date, (COALESCE(platform, '')), (COALESCE(group_id, 0)));
COMMENT ON TABLE opsmeter.metrics_daily IS 'opsmeter daily ops metrics (UTC dates) merged from the hourly sketches, so daily percentiles are as accurate as hourly ones; written by ops_upsert_daily()';
COMMENT ON INDEX opsmeter.metrics_daily_key IS 'opsmeter: one row per day and grain';
SELECT pg_catalog.pg_extension_config_dump('opsmeter.metrics_daily', '');

CREATE TYPE opsmeter.metrics_row AS (
    bucket_start                      timestamptz,
    platform                          text,
    group_id                          bigint,
    success_count                     bigint,
    error_count_total                 bigint,
    business_limited_count            bigint,
    error_count_sla                   bigint,
    upstream_error_count_excl_429_529 bigint,
    upstream_429_count                bigint,
    upstream_529_count                bigint,
    token_consumed                    bigint,
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
    duration_sketch                   ops_sketch,
    ttft_sketch                       ops_sketch
);
COMMENT ON TYPE opsmeter.metrics_row IS 'opsmeter: one bucket of ops_metrics() output';

CREATE STATISTICS opsmeter.usage_logs_hour_group (ndistinct)
    ON (pg_catalog.date_bin('1 hour'::interval, created_at, '2000-01-03 00:00:00+00'::timestamptz)), group_id
    FROM opsmeter.usage_logs;
COMMENT ON STATISTICS opsmeter.usage_logs_hour_group IS 'opsmeter: number of (UTC hour, group) groups, for the rollup''s plan';
CREATE STATISTICS opsmeter.error_logs_hour_group (ndistinct)
    ON (pg_catalog.date_bin('1 hour'::interval, created_at, '2000-01-03 00:00:00+00'::timestamptz)), platform, group_id
    FROM opsmeter.error_logs;
COMMENT ON STATISTICS opsmeter.error_logs_hour_group IS 'opsmeter: number of (UTC hour, platform, group) groups, for the rollup''s plan';

CREATE  FUNCTION "ops_latest_daily_bucket"() RETURNS date /* Option < pgrx :: datum :: Date > */
STRICT STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_latest_daily_bucket_wrapper';

CREATE  FUNCTION "ops_latest_hourly_bucket"() RETURNS timestamp with time zone /* Option < TimestampWithTimeZone > */
STRICT STABLE PARALLEL SAFE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_latest_hourly_bucket_wrapper';

CREATE  FUNCTION "ops_metrics_query"(
	"since" timestamp with time zone, /* TimestampWithTimeZone */
	"until" timestamp with time zone, /* TimestampWithTimeZone */
	"bucket" interval /* Interval */
) RETURNS TEXT /* String */
STRICT STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_metrics_query_wrapper';

CREATE FUNCTION ops_metrics(
    since timestamptz, until timestamptz, bucket interval,
    platform text DEFAULT NULL, group_id bigint DEFAULT NULL
) RETURNS SETOF opsmeter.metrics_row
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    q text;
BEGIN
    IF bucket IS NULL THEN
        RAISE EXCEPTION 'bucket must not be NULL' USING ERRCODE = '22023',
            HINT = 'Examples: ''15 minutes'', ''1 hour'', ''1 day'', ''1 month''.';
    END IF;
    IF since IS NULL OR until IS NULL OR until <= since THEN
        RETURN;
    END IF;
    q := @extschema@.ops_metrics_query(since, until, bucket);
    -- hash aggregation for the raw-log path (see with_hash_aggregation in src/rollups.rs);
    -- reverted when the function returns, as it has its own SET clause
    PERFORM pg_catalog.set_config('enable_sort', 'off', true);
    RETURN QUERY EXECUTE q USING since, until, platform, group_id;
END
$fn$;

CREATE  FUNCTION "ops_rollup_catch_up"() RETURNS bigint /* i64 */
STRICT VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_rollup_catch_up_wrapper';

CREATE  FUNCTION "ops_upsert_daily"(
	"start_time" timestamp with time zone, /* Option < TimestampWithTimeZone > */
	"end_time" timestamp with time zone /* Option < TimestampWithTimeZone > */
) RETURNS bigint /* i64 */
VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_upsert_daily_wrapper';

CREATE  FUNCTION "ops_upsert_hourly"(
	"start_time" timestamp with time zone, /* Option < TimestampWithTimeZone > */
	"end_time" timestamp with time zone /* Option < TimestampWithTimeZone > */
) RETURNS bigint /* i64 */
VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_upsert_hourly_wrapper';

COMMENT ON FUNCTION ops_upsert_hourly(timestamptz, timestamptz) IS 'opsmeter: recompute opsmeter.metrics_hourly for [start_time, end_time) widened to whole UTC hours (each hour replaced exactly); NULL, empty or inverted windows return 0; returns rows written';
COMMENT ON FUNCTION ops_upsert_daily(timestamptz, timestamptz) IS 'opsmeter: recompute opsmeter.metrics_daily for [start_time, end_time) widened to whole UTC days, merging the hourly sketches; returns rows written';
COMMENT ON FUNCTION ops_latest_hourly_bucket() IS 'opsmeter: start of the latest hour in opsmeter.metrics_hourly (NULL when empty)';
COMMENT ON FUNCTION ops_latest_daily_bucket() IS 'opsmeter: latest date in opsmeter.metrics_daily (NULL when empty)';
COMMENT ON FUNCTION ops_rollup_catch_up() IS 'opsmeter: roll up from the latest rolled-up hour to now() - opsmeter.rollup_lag, then the complete days; what pg_cron or the background worker calls; returns rows written';
COMMENT ON FUNCTION ops_metrics_query(timestamptz, timestamptz, interval) IS 'opsmeter: the SQL ops_metrics runs for a bucket width ($1 since, $2 until, $3 platform, $4 group_id), for EXPLAIN';
COMMENT ON FUNCTION ops_metrics(timestamptz, timestamptz, interval, text, bigint) IS 'opsmeter: ops metrics for [since, until) in buckets of any width (1 minute .. 366 days, or months), one grain (overall, a platform, or a group), percentiles merged from stored sketches';
