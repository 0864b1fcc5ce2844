-- Comparisons of opsmeter's rollup tables with the exact oracle (rollups_oracle.sql, load it
-- first). Used by tests/regress/sql/rollups.sql and tests/concurrency/rollups.sh.
CREATE FUNCTION oracle.within(ops numeric, exact numeric) RETURNS boolean LANGUAGE sql IMMUTABLE AS
$$ SELECT (ops IS NULL) = (exact IS NULL) AND (ops IS NULL OR abs(ops - exact) <= 0.005 * abs(exact) + 1) $$;
-- oracle._diff(m_sql, o_sql, key_col): the comparison itself, for any two queries with the
-- rollup columns and the time key column `key_col`.
CREATE FUNCTION oracle._diff(m_sql text, o_sql text, key_col text)
RETURNS TABLE (ops_rows bigint, oracle_rows bigint, missing bigint, extra bigint, bad_counts bigint, bad_percentiles bigint, bad_avg_max bigint)
LANGUAGE plpgsql AS $f$
BEGIN
    RETURN QUERY EXECUTE format($q$
WITH o AS (%2$s),
     m AS (%1$s),
     j AS (SELECT m, o FROM m FULL JOIN o ON m.%3$I = o.%3$I
             AND m.platform IS NOT DISTINCT FROM o.platform AND m.group_id IS NOT DISTINCT FROM o.group_id)
SELECT (SELECT count(*) FROM m), (SELECT count(*) FROM o),
       count(*) FILTER (WHERE (m) IS NULL), count(*) FILTER (WHERE (o) IS NULL),
       count(*) FILTER (WHERE (m).success_count <> (o).success_count OR (m).error_count_total <> (o).error_count_total
                           OR (m).business_limited_count <> (o).business_limited_count OR (m).error_count_sla <> (o).error_count_sla
                           OR (m).upstream_error_count_excl_429_529 <> (o).upstream_error_count_excl_429_529
                           OR (m).upstream_429_count <> (o).upstream_429_count OR (m).upstream_529_count <> (o).upstream_529_count
                           OR (m).token_consumed <> (o).token_consumed),
       count(*) FILTER (WHERE NOT (oracle.within((m).duration_p50_ms, (o).duration_p50_ms::numeric) AND oracle.within((m).duration_p90_ms, (o).duration_p90_ms::numeric)
                           AND oracle.within((m).duration_p95_ms, (o).duration_p95_ms::numeric) AND oracle.within((m).duration_p99_ms, (o).duration_p99_ms::numeric)
                           AND oracle.within((m).ttft_p50_ms, (o).ttft_p50_ms::numeric) AND oracle.within((m).ttft_p90_ms, (o).ttft_p90_ms::numeric)
                           AND oracle.within((m).ttft_p95_ms, (o).ttft_p95_ms::numeric) AND oracle.within((m).ttft_p99_ms, (o).ttft_p99_ms::numeric))),
       count(*) FILTER (WHERE (m).duration_max_ms IS DISTINCT FROM (o).duration_max_ms::int OR (m).ttft_max_ms IS DISTINCT FROM (o).ttft_max_ms::int
                           OR NOT coalesce(abs((m).duration_avg_ms - (o).duration_avg_ms) <= 1e-9 * (o).duration_avg_ms, (m).duration_avg_ms IS NULL AND (o).duration_avg_ms IS NULL)
                           OR NOT coalesce(abs((m).ttft_avg_ms - (o).ttft_avg_ms) <= 1e-9 * (o).ttft_avg_ms, (m).ttft_avg_ms IS NULL AND (o).ttft_avg_ms IS NULL))
  FROM j
$q$, m_sql, o_sql, key_col);
END
$f$;
-- oracle.hourly_diff(from, to): every way opsmeter's hourly rows can disagree with the oracle.
-- Counts and max exactly, means to 1e-9, percentiles within alpha (0.5%) plus 1 ms of rounding.
CREATE FUNCTION oracle.hourly_diff(f timestamptz, t timestamptz)
RETURNS TABLE (ops_rows bigint, oracle_rows bigint, missing bigint, extra bigint, bad_counts bigint, bad_percentiles bigint, bad_avg_max bigint)
LANGUAGE sql AS $$
SELECT * FROM oracle._diff(format('SELECT * FROM opsmeter.metrics_hourly WHERE bucket_start >= %L AND bucket_start < %L', f, t),
                           format('SELECT * FROM oracle.hourly(%L, %L)', f, t), 'bucket_start')
$$;
-- oracle.daily_diff(from, to): the same for the daily rows of [from, to).
CREATE FUNCTION oracle.daily_diff(f date, t date)
RETURNS TABLE (ops_rows bigint, oracle_rows bigint, missing bigint, extra bigint, bad_counts bigint, bad_percentiles bigint, bad_avg_max bigint)
LANGUAGE sql AS $$
SELECT * FROM oracle._diff(format('SELECT * FROM opsmeter.metrics_daily WHERE bucket_date >= %L AND bucket_date < %L', f, t),
                           format('SELECT * FROM oracle.daily(%L, %L)', f, t), 'bucket_date')
$$;
-- a fingerprint of the hourly table (everything but computed_at), to show what changed
CREATE FUNCTION oracle.hourly_md5() RETURNS text LANGUAGE sql SET TimeZone = 'UTC' AS $$
SELECT md5(string_agg(row(bucket_start, platform, group_id, success_count, error_count_total, business_limited_count,
                          error_count_sla, upstream_error_count_excl_429_529, upstream_429_count, upstream_529_count,
                          token_consumed, duration_p50_ms, duration_p90_ms, duration_p95_ms, duration_p99_ms,
                          duration_avg_ms, duration_max_ms, ttft_p50_ms, ttft_p90_ms, ttft_p95_ms, ttft_p99_ms,
                          ttft_avg_ms, ttft_max_ms, duration_sketch::text, ttft_sketch::text)::text, ',' ORDER BY bucket_start, platform, group_id))
  FROM opsmeter.metrics_hourly $$;

