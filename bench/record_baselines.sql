-- Baselines for the request-record benchmark (bench/records.sh, SPEC §8), to time ops_add_records,
-- ops_history and ops_model_history against. Re-runnable; needs, in this order:
--
--   CREATE EXTENSION opsmeter; CREATE EXTENSION tdigest;    -- both in schema public
--   \i bench/record_baselines.sql
--   -- ingest: bench.batches(batch, js) filled with JSON arrays of records (bench/records.sh)
--   CALL bench.add_ops();  CALL bench.add_plain();
--   -- history: opsmeter.request_records filled
--   SET max_parallel_workers_per_gather = 0;
--   SELECT count(h.*) FROM bench.seed_history('messages', '2026-10-22 00:00+00', 3600) h;
--   SELECT count(h.*) FROM bench.floor_history('messages', '2026-10-22 00:00+00', 3600) h;
--   SELECT count(h.*) FROM bench.tdigest_history('messages', '2026-10-22 00:00+00', 86400, true) h;
--
-- What each baseline is:
--   add_plain  the same batches written by INSERT ... SELECT FROM jsonb_to_recordset into
--       bench.plain_records, a table like opsmeter.request_records (same columns, partitioning
--       and index): no validation, no record_latest upkeep, no partition check.
--   parse_ops / parse_plain  the reading half of each: ops_add_records on batches whose last
--       element is bad (it parses and checks the 1 000 good ones, then rejects the batch, so
--       nothing is written), and count(t.*) over jsonb_to_recordset.
--   seed_history  the seed's history query in our own words: GROUP BY the epoch bucket
--       (to_timestamp(floor(extract(epoch) / iv) * iv)) with count / count FILTER and
--       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY latency_ms).
--   floor_history  the scan floor: ops_history's query (date_bin buckets, and model; the same
--       GROUP BY, hashed, the groups sorted afterwards) with only count / count FILTER / sum.
--   tdigest_history  ops_history's query with tdigest_percentile(latency_ms, 100, ARRAY[...])
--       (one digest per group, then its percentiles) in place of ops_sketch / ops_quantiles.
-- by_model = true groups by (bucket, model) as ops_model_history does (model is NULL otherwise).
-- Planner settings, pinned per function so every baseline gets its best plan:
--   RETURN QUERY EXECUTE ... USING  planned for the actual arguments on every call, as
--       opsmeter's one-shot SPI queries are; PostgreSQL may run it with parallel workers;
--   enable_sort = off and no ORDER BY around the aggregation (floor, tdigest)  as ops_history
--       does: PostgreSQL has no statistics for date_bin(created_at), expects one group per row
--       and would sort every record (on disk at 10 M) to group them, or to order the groups;
--       so the aggregation runs in a MATERIALIZED CTE, hashed, and only its few rows are
--       sorted (ops_history sorts them in Rust). The seed's ordered-set aggregate cannot hash,
--       so it keeps the planner's defaults and its ORDER BY.

CREATE SCHEMA IF NOT EXISTS bench;

-------------------------------------------------------------------------------------------------
-- Ingest.

CREATE TABLE IF NOT EXISTS bench.batches (batch integer PRIMARY KEY, js jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS bench.bad_batches (batch integer PRIMARY KEY, js jsonb NOT NULL);

CREATE TABLE IF NOT EXISTS bench.plain_records (
    api_type    text NOT NULL,
    metrics_key text NOT NULL,
    base_url    text NOT NULL DEFAULT '',
    model       text NOT NULL DEFAULT '',
    success     boolean NOT NULL,
    status_code integer NOT NULL DEFAULT 0,
    latency_ms  double precision NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL
) PARTITION BY RANGE (created_at);
CREATE INDEX IF NOT EXISTS plain_records_key ON bench.plain_records (api_type, metrics_key, created_at);

-- bench.plain_day(day): the day partition of bench.plain_records, as ops_create_record_partitions makes them.
CREATE OR REPLACE FUNCTION bench.plain_day(day date) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE TABLE IF NOT EXISTS bench.plain_records_p%s PARTITION OF bench.plain_records
                    FOR VALUES FROM (%L) TO (%L)', to_char(day, 'YYYYMMDD'),
                   day::text || ' 00:00:00+00', (day + 1)::text || ' 00:00:00+00');
END
$$;

-- One ops_add_records call per batch, in batch order, each batch its own transaction.
CREATE OR REPLACE PROCEDURE bench.add_ops()
LANGUAGE plpgsql AS $$
DECLARE
    n integer := (SELECT max(batch) FROM bench.batches);
BEGIN
    FOR i IN 1 .. n LOOP
        PERFORM public.ops_add_records((SELECT b.js FROM bench.batches b WHERE b.batch = i));
        COMMIT;
    END LOOP;
END
$$;

-- The same batches by INSERT ... SELECT FROM jsonb_to_recordset, one statement and transaction each.
CREATE OR REPLACE PROCEDURE bench.add_plain()
LANGUAGE plpgsql AS $$
DECLARE
    n integer := (SELECT max(batch) FROM bench.batches);
BEGIN
    FOR i IN 1 .. n LOOP
        INSERT INTO bench.plain_records
                    (api_type, metrics_key, base_url, model, success, status_code, latency_ms, created_at)
        SELECT t.api_type, t.metrics_key, COALESCE(t.base_url, ''), COALESCE(t.model, ''),
               t.success, t.status_code, t.latency_ms, t.created_at
          FROM bench.batches b,
               jsonb_to_recordset(b.js) AS t(api_type text, metrics_key text, base_url text, model text,
                                             success boolean, status_code integer, latency_ms float8,
                                             created_at timestamptz)
         WHERE b.batch = i;
        COMMIT;
    END LOOP;
END
$$;

-- ops_add_records on every bad batch: parses and checks all 1 000 good elements, rejects the last.
CREATE OR REPLACE FUNCTION bench.parse_ops() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    n integer := (SELECT max(batch) FROM bench.bad_batches);
    rejected integer := 0;
BEGIN
    FOR i IN 1 .. n LOOP
        BEGIN
            PERFORM public.ops_add_records((SELECT b.js FROM bench.bad_batches b WHERE b.batch = i));
        EXCEPTION WHEN invalid_parameter_value THEN
            rejected := rejected + 1;
        END;
    END LOOP;
    RETURN rejected;
END
$$;

-- jsonb_to_recordset of every good batch into whole rows, nothing written.
CREATE OR REPLACE FUNCTION bench.parse_plain() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n integer := (SELECT max(batch) FROM bench.batches);
    total bigint := 0;
    c bigint;
BEGIN
    FOR i IN 1 .. n LOOP
        SELECT count(t.*) INTO c
          FROM bench.batches b,
               jsonb_to_recordset(b.js) AS t(api_type text, metrics_key text, base_url text, model text,
                                             success boolean, status_code integer, latency_ms float8,
                                             created_at timestamptz)
         WHERE b.batch = i;
        total := total + c;
    END LOOP;
    RETURN total;
END
$$;

-------------------------------------------------------------------------------------------------
-- History.

-- The seed's query: epoch buckets, count / FILTER, percentile_cont over the raw rows.
CREATE OR REPLACE FUNCTION bench.seed_history(api_type text, since timestamptz, iv bigint,
                                              by_model boolean DEFAULT false)
RETURNS TABLE (bucket_start timestamptz, model text, requests bigint, successes bigint, failures bigint,
               success_rate float8, latency_p50_ms float8, latency_p95_ms float8, latency_p99_ms float8)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY EXECUTE format($q$
        SELECT s.bucket_start, s.model, s.requests, s.successes, s.requests - s.successes,
               100.0::float8 * s.successes / s.requests, s.p[1], s.p[2], s.p[3]
          FROM (SELECT to_timestamp(floor(extract(epoch FROM r.created_at) / $3) * $3) AS bucket_start,
                       %s AS model,
                       count(*) AS requests,
                       count(*) FILTER (WHERE r.success) AS successes,
                       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY r.latency_ms) AS p
                  FROM opsmeter.request_records r
                 WHERE r.api_type = $1 AND r.created_at >= $2
                 GROUP BY 1, 2) s
         ORDER BY 1, 2$q$, CASE WHEN by_model THEN 'r.model' ELSE 'NULL::text' END)
    USING api_type, since, iv;
END
$$;

-- date_bin origin of ops_history: the latest multiple of iv seconds since the Unix epoch at or before since.
CREATE OR REPLACE FUNCTION bench.history_origin(since timestamptz, iv bigint) RETURNS timestamptz
LANGUAGE sql IMMUTABLE
AS $$ SELECT to_timestamp((floor(extract(epoch FROM since) / iv) * iv)::float8) $$;

-- The scan floor: ops_history's query (same grouping, hashed; the buckets sorted afterwards, as
-- ops_history's glue does) with plain count / FILTER / sum in place of the sketch and its quantiles.
CREATE OR REPLACE FUNCTION bench.floor_history(api_type text, since timestamptz, iv bigint,
                                               by_model boolean DEFAULT false)
RETURNS TABLE (bucket_start timestamptz, model text, requests bigint, successes bigint, latency_sum float8)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET enable_sort = off
AS $$
BEGIN
    RETURN QUERY EXECUTE format($q$
        WITH b AS MATERIALIZED (
            SELECT date_bin($3, r.created_at, $4) AS bucket_start%s,
                   count(*) AS requests,
                   count(*) FILTER (WHERE r.success) AS successes,
                   sum(r.latency_ms) AS latency_sum
              FROM opsmeter.request_records r
             WHERE r.api_type = $1 AND r.created_at >= $2
             GROUP BY %s)
        SELECT b.bucket_start, %s, b.requests, b.successes, b.latency_sum
          FROM b
         ORDER BY %s$q$,
        CASE WHEN by_model THEN ', r.model' ELSE '' END, CASE WHEN by_model THEN '1, 2' ELSE '1' END,
        CASE WHEN by_model THEN 'b.model' ELSE 'NULL::text' END,
        CASE WHEN by_model THEN 'b.bucket_start, b.model COLLATE "C"' ELSE 'b.bucket_start' END)
    USING api_type, since, make_interval(secs => iv), bench.history_origin(since, iv);
END
$$;

-- ops_history's query with tdigest(latency_ms, 100) percentiles (one digest per group, then its
-- percentiles: tdigest_percentile(x, 100, ARRAY[...])) in place of ops_sketch / ops_quantiles.
CREATE OR REPLACE FUNCTION bench.tdigest_history(api_type text, since timestamptz, iv bigint,
                                                 by_model boolean DEFAULT false)
RETURNS TABLE (bucket_start timestamptz, model text, requests bigint, successes bigint, failures bigint,
               success_rate float8, latency_p50_ms float8, latency_p95_ms float8, latency_p99_ms float8)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET enable_sort = off
AS $$
BEGIN
    RETURN QUERY EXECUTE format($q$
        WITH b AS MATERIALIZED (
            SELECT date_bin($3, r.created_at, $4) AS bucket_start%s,
                   count(*) AS requests,
                   count(*) FILTER (WHERE r.success) AS successes,
                   public.tdigest_percentile(r.latency_ms, 100, ARRAY[0.5, 0.95, 0.99]::float8[]) AS p
              FROM opsmeter.request_records r
             WHERE r.api_type = $1 AND r.created_at >= $2
             GROUP BY %s)
        SELECT b.bucket_start, %s, b.requests, b.successes, b.requests - b.successes,
               100.0::float8 * b.successes / b.requests, b.p[1], b.p[2], b.p[3]
          FROM b
         ORDER BY %s$q$,
        CASE WHEN by_model THEN ', r.model' ELSE '' END, CASE WHEN by_model THEN '1, 2' ELSE '1' END,
        CASE WHEN by_model THEN 'b.model' ELSE 'NULL::text' END,
        CASE WHEN by_model THEN 'b.bucket_start, b.model COLLATE "C"' ELSE 'b.bucket_start' END)
    USING api_type, since, make_interval(secs => iv), bench.history_origin(since, iv);
END
$$;
