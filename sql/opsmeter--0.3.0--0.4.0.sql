-- opsmeter 0.3.0 -> 0.4.0: adds the request-record store (SPEC section 3) and daily stats
-- (SPEC section 4): tables opsmeter.request_records (partitioned by day), record_latest,
-- circuit_states, daily_stats, daily_model_stats, and their functions. Nothing existing changes.
\echo Use "ALTER EXTENSION opsmeter UPDATE TO '0.4.0'" to load this file. \quit

CREATE TABLE opsmeter.request_records (
    api_type    text NOT NULL,
    metrics_key text NOT NULL,
    base_url    text NOT NULL DEFAULT '',
    model       text NOT NULL DEFAULT '',
    success     boolean NOT NULL,
    status_code integer NOT NULL DEFAULT 0,
    latency_ms  double precision NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL
) PARTITION BY RANGE (created_at);
COMMENT ON TABLE opsmeter.request_records IS 'opsmeter request-record store: one row per upstream request of a gateway key, range-partitioned by UTC day (opsmeter.request_records_pYYYYMMDD, created on demand, each indexed on api_type, metrics_key, created_at); written by ops_add_records()';

CREATE TABLE opsmeter.record_latest (
    api_type        text NOT NULL,
    metrics_key     text NOT NULL,
    last_success_at timestamptz,
    last_failure_at timestamptz,
    PRIMARY KEY (api_type, metrics_key)
);
COMMENT ON TABLE opsmeter.record_latest IS 'opsmeter: latest success and failure time of every key ever recorded, kept current by ops_add_records() so ops_latest_timestamps() never scans history';
SELECT pg_catalog.pg_extension_config_dump('opsmeter.record_latest', '');

CREATE TABLE opsmeter.circuit_states (
    api_type             text NOT NULL,
    metrics_key          text NOT NULL,
    state                text NOT NULL CHECK (state IN ('closed', 'open', 'half_open')),
    failure_count        integer NOT NULL DEFAULT 0 CHECK (failure_count >= 0),
    consecutive_failures integer NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    opened_at            timestamptz,
    next_attempt_at      timestamptz,
    updated_at           timestamptz NOT NULL,
    PRIMARY KEY (api_type, metrics_key)
);
COMMENT ON TABLE opsmeter.circuit_states IS 'opsmeter circuit-breaker state per api_type and key; written by ops_circuit_upsert()';
SELECT pg_catalog.pg_extension_config_dump('opsmeter.circuit_states', '');

CREATE FUNCTION ops_load_records(since timestamptz, api_type text)
RETURNS SETOF opsmeter.request_records
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT r.* FROM opsmeter.request_records r
     WHERE r.api_type = $2 AND r.created_at >= $1
     ORDER BY r.created_at
$fn$;

CREATE FUNCTION ops_latest_timestamps(api_type text)
RETURNS TABLE (metrics_key text, last_success_at timestamptz, last_failure_at timestamptz)
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT l.metrics_key, l.last_success_at, l.last_failure_at
      FROM opsmeter.record_latest l
     WHERE l.api_type = $1
     ORDER BY l.metrics_key COLLATE "C"
$fn$;

CREATE FUNCTION ops_circuit_states(api_type text)
RETURNS SETOF opsmeter.circuit_states
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT c.* FROM opsmeter.circuit_states c
     WHERE c.api_type = $1
     ORDER BY c.metrics_key COLLATE "C"
$fn$;

CREATE FUNCTION ops_delete_by_metrics_keys(keys text[], api_type text)
RETURNS bigint
LANGUAGE sql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH gone AS (
        DELETE FROM opsmeter.request_records r
         WHERE r.api_type = $2 AND r.metrics_key = ANY ($1)
        RETURNING 1),
    latest AS (
        DELETE FROM opsmeter.record_latest l
         WHERE l.api_type = $2 AND l.metrics_key = ANY ($1))
    SELECT pg_catalog.count(*) FROM gone
$fn$;

CREATE FUNCTION ops_delete_circuit_states(keys text[], api_type text)
RETURNS bigint
LANGUAGE sql VOLATILE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
    WITH gone AS (
        DELETE FROM opsmeter.circuit_states c
         WHERE c.api_type = $2 AND c.metrics_key = ANY ($1)
        RETURNING 1)
    SELECT pg_catalog.count(*) FROM gone
$fn$;

CREATE FUNCTION ops_record_partitions()
RETURNS TABLE (partition regclass, day date)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT c.oid::regclass,
           CASE WHEN c.relname ~ '^request_records_p[0-9]{8}$'
                THEN pg_catalog.to_date(pg_catalog.substr(c.relname, 18), 'YYYYMMDD') END
      FROM pg_catalog.pg_inherits i
      JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
     WHERE i.inhparent = 'opsmeter.request_records'::regclass
     ORDER BY 2, 1::text
$fn$;

CREATE TABLE opsmeter.daily_stats (
    date           date PRIMARY KEY,
    requests       bigint NOT NULL,
    success        bigint NOT NULL,
    failed         bigint NOT NULL,
    tokens_in      bigint NOT NULL,
    tokens_out     bigint NOT NULL,
    latency_sum_ms bigint NOT NULL,
    top_models     jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE opsmeter.daily_stats IS 'opsmeter daily stats: one immutable row per complete UTC day with traffic in the log_records source (success: 200 <= status < 400; failed: status >= 400 or 0; top 10 models); written by ops_daily_stats_run()';
SELECT pg_catalog.pg_extension_config_dump('opsmeter.daily_stats', '');

CREATE TABLE opsmeter.daily_model_stats (
    date     date NOT NULL,
    model    text NOT NULL,
    requests bigint NOT NULL,
    tokens   bigint NOT NULL,
    PRIMARY KEY (date, model)
);
COMMENT ON TABLE opsmeter.daily_model_stats IS 'opsmeter: every model of each daily_stats day (requests, tokens in + out), written with it, so ops_stats() ranks models over several days exactly';
SELECT pg_catalog.pg_extension_config_dump('opsmeter.daily_model_stats', '');

CREATE  FUNCTION "ops_add_records"(
	"records" jsonb /* JsonbText */
) RETURNS bigint /* i64 */
STRICT VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_add_records_wrapper';

CREATE  FUNCTION "ops_circuit_upsert"(
	"api_type" TEXT, /* Option < & str > */
	"metrics_key" TEXT, /* Option < & str > */
	"state" TEXT, /* Option < & str > */
	"failure_count" INT DEFAULT 0, /* Option < i32 > */
	"consecutive_failures" INT DEFAULT 0, /* Option < i32 > */
	"opened_at" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"next_attempt_at" timestamp with time zone DEFAULT NULL, /* Option < TimestampWithTimeZone > */
	"updated_at" timestamp with time zone DEFAULT now() /* Option < TimestampWithTimeZone > */
) RETURNS bool /* bool */
VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_circuit_upsert_wrapper';

CREATE  FUNCTION "ops_cleanup_records"(
	"before" timestamp with time zone /* TimestampWithTimeZone */
) RETURNS bigint /* i64 */
STRICT VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_cleanup_records_wrapper';

CREATE  FUNCTION "ops_create_record_partitions"(
	"from_day" date, /* Date */
	"to_day" date /* Date */
) RETURNS INT /* i32 */
STRICT VOLATILE SECURITY DEFINER
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_create_record_partitions_wrapper';

CREATE  FUNCTION "ops_daily_stats_backfill"(
	"from_day" date, /* Date */
	"to_day" date /* Date */
) RETURNS INT /* i32 */
STRICT VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_daily_stats_backfill_wrapper';

CREATE  FUNCTION "ops_daily_stats_run"(
	"day" date DEFAULT ((pg_catalog.now() AT TIME ZONE 'UTC')::date - 1) /* Date */
) RETURNS bool /* bool */
STRICT VOLATILE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_daily_stats_run_wrapper';

CREATE  FUNCTION "ops_history"(
	"api_type" TEXT, /* Option < & str > */
	"since" timestamp with time zone, /* Option < TimestampWithTimeZone > */
	"interval_seconds" bigint, /* Option < i64 > */
	"metrics_key" TEXT DEFAULT NULL, /* Option < String > */
	"base_url" TEXT DEFAULT NULL /* Option < String > */
) RETURNS TABLE (
	"bucket_start" timestamp with time zone,  /* TimestampWithTimeZone */
	"requests" bigint,  /* i64 */
	"successes" bigint,  /* i64 */
	"failures" bigint,  /* i64 */
	"success_rate" double precision,  /* f64 */
	"latency_p50_ms" double precision,  /* Option < f64 > */
	"latency_p95_ms" double precision,  /* Option < f64 > */
	"latency_p99_ms" double precision  /* Option < f64 > */
)
STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_history_wrapper';

CREATE  FUNCTION "ops_model_history"(
	"api_type" TEXT, /* Option < & str > */
	"since" timestamp with time zone, /* Option < TimestampWithTimeZone > */
	"interval_seconds" bigint, /* Option < i64 > */
	"metrics_key" TEXT DEFAULT NULL, /* Option < String > */
	"base_url" TEXT DEFAULT NULL /* Option < String > */
) RETURNS TABLE (
	"bucket_start" timestamp with time zone,  /* TimestampWithTimeZone */
	"model" TEXT,  /* String */
	"requests" bigint,  /* i64 */
	"successes" bigint,  /* i64 */
	"failures" bigint,  /* i64 */
	"success_rate" double precision,  /* f64 */
	"latency_p50_ms" double precision,  /* Option < f64 > */
	"latency_p95_ms" double precision,  /* Option < f64 > */
	"latency_p99_ms" double precision  /* Option < f64 > */
)
STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_model_history_wrapper';

CREATE  FUNCTION "ops_stats"(
	"period" TEXT /* & str */
) RETURNS TABLE (
	"period" TEXT,  /* String */
	"since" timestamp with time zone,  /* TimestampWithTimeZone */
	"until" timestamp with time zone,  /* TimestampWithTimeZone */
	"requests" bigint,  /* i64 */
	"success" bigint,  /* i64 */
	"failed" bigint,  /* i64 */
	"tokens_in" bigint,  /* i64 */
	"tokens_out" bigint,  /* i64 */
	"latency_sum_ms" bigint,  /* i64 */
	"avg_latency_ms" double precision,  /* Option < f64 > */
	"top_models" jsonb  /* pgrx :: JsonB */
)
STRICT STABLE
SET search_path TO pg_catalog, pg_temp
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ops_stats_wrapper';

COMMENT ON FUNCTION ops_create_record_partitions(date, date) IS 'opsmeter: create the missing day partitions of opsmeter.request_records for from_day .. to_day (inclusive, at most 366 days), as the extension owner; returns how many were created';
COMMENT ON FUNCTION ops_add_records(jsonb) IS 'opsmeter: write a JSON array of request records (api_type, metrics_key, base_url, model, success, status_code, latency_ms, created_at as RFC 3339); one bad element rejects the batch naming its index and field; returns records written';
COMMENT ON FUNCTION ops_load_records(timestamptz, text) IS 'opsmeter: the records of an api_type since a time, oldest first';
COMMENT ON FUNCTION ops_latest_timestamps(text) IS 'opsmeter: last success and last failure time of every key of an api_type over its whole history, from opsmeter.record_latest (no history scan)';
COMMENT ON FUNCTION ops_circuit_upsert(text, text, text, integer, integer, timestamptz, timestamptz, timestamptz) IS 'opsmeter: insert or replace a key''s circuit-breaker state (closed, open, half_open); a state older than the stored one (by updated_at) is ignored and returns false';
COMMENT ON FUNCTION ops_circuit_states(text) IS 'opsmeter: the circuit-breaker states of an api_type, by key';
COMMENT ON FUNCTION ops_history(text, timestamptz, bigint, text, text) IS 'opsmeter: request history of an api_type since a time in buckets of interval_seconds (1 .. 2678400, aligned to the Unix epoch): requests, successes, failures, success rate (percent), latency p50/p95/p99 (ops_sketch, within 0.5%)';
COMMENT ON FUNCTION ops_model_history(text, timestamptz, bigint, text, text) IS 'opsmeter: ops_history per (bucket, model)';
COMMENT ON FUNCTION ops_cleanup_records(timestamptz) IS 'opsmeter: remove records older than before: whole days by dropping their partitions, the boundary day by DELETE; returns records removed';
COMMENT ON FUNCTION ops_record_partitions() IS 'opsmeter: the partitions of opsmeter.request_records and the UTC day each holds';
COMMENT ON FUNCTION ops_delete_by_metrics_keys(text[], text) IS 'opsmeter: delete the records (and latest times) of these keys of one api_type only; returns records deleted';
COMMENT ON FUNCTION ops_delete_circuit_states(text[], text) IS 'opsmeter: delete the circuit-breaker states of these keys of one api_type only; returns states deleted';
COMMENT ON FUNCTION ops_daily_stats_run(date) IS 'opsmeter: write opsmeter.daily_stats for one complete UTC day (default yesterday) from the log_records source; false when the day exists already or had no traffic; rows are never modified';
COMMENT ON FUNCTION ops_daily_stats_backfill(date, date) IS 'opsmeter: ops_daily_stats_run for every day of from_day .. to_day (inclusive); returns days written';
COMMENT ON FUNCTION ops_stats(text) IS 'opsmeter: requests, success, failed, tokens, latency and top 10 models for ''today'', ''last7d'' or ''last30d'' (UTC days up to now), from daily_stats rows and the source';
