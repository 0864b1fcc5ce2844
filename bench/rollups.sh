#!/usr/bin/env bash
# ops_upsert_hourly speed and rollup accuracy (issues: ops rollups, speed on other shapes; SPEC §8).
#   bash bench/rollups.sh            (BENCH_ROWS=2000000 usage rows in one UTC day, BENCH_RUNS=7,
#                                     BENCH_GROUPS=24 key groups on BENCH_PLATFORMS=3 platforms)
#   BENCH_GROUPS=200 BENCH_PLATFORMS=4 bash bench/rollups.sh
# One run, one server, serial plans (max_parallel_workers_per_gather = 0, jit off):
#   ops_upsert_hourly (one aggregation per log table at (hour, group) with ops_sketch, grains by
#   merging, delete + insert), against bench/rollup_baselines.sql:
#     seed     the seed's SQL in our own words (GROUPING SETS + percentile_cont, upsert)
#     floor    one scan per log table, plain count/sum/max hash aggregation at (hour, group)
#     tdigest  opsmeter's design with tdigest(x, 100) in place of ops_sketch
#   first on the rows as traffic.sql appends them (time order, as a gateway writes its log), with
#   a parallel run of ops_upsert_hourly and the floor; then percentile accuracy against exact
#   percentile_disc (tests/oracle/rollups_oracle.sql), hourly and daily, beside the seed's daily
#   approximation; then all four again after shuffling the rows' physical order (several writers,
#   late inserts, a restored dump: each row then updates a random one of the day's sketch states).
#   Writes bench/results/rollups.md (24 groups, 3 platforms) or rollups-<G>g<P>p.md.
source "$(dirname "$0")/common.sh"
cd "$ROOT"
BENCH_ROWS="${BENCH_ROWS:-2000000}"
BENCH_GROUPS="${BENCH_GROUPS:-24}"
BENCH_PLATFORMS="${BENCH_PLATFORMS:-3}"
if [ "$BENCH_GROUPS" = 24 ] && [ "$BENCH_PLATFORMS" = 3 ]; then
    OUT=bench/results/rollups.md
else
    OUT="bench/results/rollups-${BENCH_GROUPS}g${BENCH_PLATFORMS}p.md"
fi
DAY=2026-11-21
W="'$DAY 00:00+00', '$DAY 00:00+00'::timestamptz + interval '1 day'"
bench_setup

say "generating a day of $BENCH_ROWS usage rows (+5% errors)"
"${PSQL[@]}" -d opsmeter_bench -v day=$DAY -v usage_rows="$BENCH_ROWS" -v seed=0.42 \
    -v groups="$BENCH_GROUPS" -v platforms="$BENCH_PLATFORMS" -f bench/traffic.sql >/dev/null
"${PSQL[@]}" -d opsmeter_bench -f tests/oracle/rollups_oracle.sql -f bench/rollup_baselines.sql >/dev/null
"${PSQL[@]}" -d opsmeter_bench -c "VACUUM (ANALYZE, FREEZE) opsmeter.usage_logs, opsmeter.error_logs, opsmeter.groups"
usage=$("${PSQL[@]}" -d opsmeter_bench -Atc "SELECT count(*) FROM opsmeter.usage_logs")
errors=$("${PSQL[@]}" -d opsmeter_bench -Atc "SELECT count(*) FROM opsmeter.error_logs")

say "timing, rows in time order (median of $BENCH_RUNS interleaved rounds)"
declare -A T
while read -r name ms; do T[$name]=$ms; done < <(interleaved_medians \
    "ops=SELECT ops_upsert_hourly($W)" "seed=SELECT bench.seed_upsert_hourly($W)" \
    "floor=SELECT * FROM bench.floor_hourly($W)" "td=SELECT bench.tdigest_upsert_hourly($W)")
while read -r name ms; do T[$name]=$ms; done < <(BENCH_SETUP="SET max_parallel_workers_per_gather = 2;" \
    interleaved_medians "pops=SELECT ops_upsert_hourly($W)" "pfloor=SELECT * FROM bench.floor_hourly($W)")
ops=${T[ops]}; seed=${T[seed]}; floor=${T[floor]}; td=${T[td]}; pops=${T[pops]}; pfloor=${T[pfloor]}

say "accuracy against exact percentile_disc"
"${PSQL[@]}" -d opsmeter_bench -Atc "SELECT ops_upsert_hourly($W), ops_upsert_daily($W), bench.seed_upsert_hourly($W), bench.seed_upsert_daily($W)" >/dev/null
acc=$("${PSQL[@]}" -d opsmeter_bench -At -F ' | ' <<SQL
WITH o AS (SELECT * FROM bench.rollup_error('opsmeter.metrics_hourly', 'hourly', $W)),
     od AS (SELECT * FROM bench.rollup_error('opsmeter.metrics_daily', 'daily', $W)),
     s AS (SELECT * FROM bench.rollup_error('bench.seed_hourly', 'hourly', $W)),
     sd AS (SELECT * FROM bench.seed_daily_error('$DAY', '$DAY'::date + 1))
SELECT o.metric, o.compared, round(o.max_rel_error_pct::numeric, 2) || ' %', round(od.max_rel_error_pct::numeric, 2) || ' %',
       round(s.max_rel_error_pct::numeric, 2) || ' %', round(sd.max_rel_error_pct::numeric, 2) || ' %'
  FROM o JOIN od USING (metric) JOIN s USING (metric) JOIN sd USING (metric)
 ORDER BY o.metric;
SQL
)
# the α contract on the stored integers: |ops - exact| <= α·exact + 0.5 ms (rounding)
viol=$("${PSQL[@]}" -d opsmeter_bench -Atc "
    SELECT count(*) FILTER (WHERE abs(m.duration_p99_ms - o.duration_p99_ms) > 0.005 * o.duration_p99_ms + 0.5
                               OR abs(m.duration_p50_ms - o.duration_p50_ms) > 0.005 * o.duration_p50_ms + 0.5
                               OR abs(m.ttft_p99_ms - o.ttft_p99_ms) > 0.005 * o.ttft_p99_ms + 0.5) || ' of ' || count(*)
      FROM opsmeter.metrics_daily m JOIN oracle.daily('$DAY', '$DAY'::date + 1) o
        ON o.bucket_date = m.bucket_date AND o.platform IS NOT DISTINCT FROM m.platform AND o.group_id IS NOT DISTINCT FROM m.group_id")

say "the same day with its rows in random physical order"
"${PSQL[@]}" -d opsmeter_bench -c "SELECT setseed(0.5)" -c "CREATE TABLE shuffled AS SELECT * FROM opsmeter.usage_logs ORDER BY random()" \
    -c "TRUNCATE opsmeter.usage_logs" -c "INSERT INTO opsmeter.usage_logs SELECT * FROM shuffled" -c "DROP TABLE shuffled" \
    -c "CREATE TABLE shuffled AS SELECT * FROM opsmeter.error_logs ORDER BY random()" \
    -c "TRUNCATE opsmeter.error_logs" -c "INSERT INTO opsmeter.error_logs SELECT * FROM shuffled" -c "DROP TABLE shuffled" \
    -c "VACUUM (ANALYZE, FREEZE) opsmeter.usage_logs, opsmeter.error_logs" >/dev/null
while read -r name ms; do T[$name]=$ms; done < <(interleaved_medians \
    "sops=SELECT ops_upsert_hourly($W)" "sseed=SELECT bench.seed_upsert_hourly($W)" \
    "sfloor=SELECT * FROM bench.floor_hourly($W)" "std=SELECT bench.tdigest_upsert_hourly($W)")
sops=${T[sops]}; sseed=${T[sseed]}; sfloor=${T[sfloor]}; std=${T[std]}
# the shuffled day's rollup must equal the ordered day's (same rows): percentiles, counts, sums
same=$("${PSQL[@]}" -d opsmeter_bench -Atc "
    CREATE TEMP TABLE before AS SELECT to_jsonb(h) - 'computed_at' AS r FROM opsmeter.metrics_hourly h;
    SELECT ops_upsert_hourly($W);
    SELECT CASE WHEN (SELECT count(*) FROM (SELECT r FROM before EXCEPT
                                            SELECT to_jsonb(h) - 'computed_at' FROM opsmeter.metrics_hourly h) a) = 0
                 AND (SELECT count(*) FROM (SELECT to_jsonb(h) - 'computed_at' FROM opsmeter.metrics_hourly h EXCEPT
                                            SELECT r FROM before) b) = 0
                 AND (SELECT count(*) FROM before) = (SELECT count(*) FROM opsmeter.metrics_hourly)
                THEN 'identical, ' || (SELECT count(*) FROM before) || ' rows'
                ELSE 'DIFFERENT' END" | tail -1)

mkdir -p bench/results
{
    echo "# ops rollup benchmark"
    echo
    echo "\`BENCH_GROUPS=$BENCH_GROUPS BENCH_PLATFORMS=$BENCH_PLATFORMS bash bench/rollups.sh\` — $(date -u +%Y-%m-%d), one UTC day of $usage usage rows and $errors error rows ($BENCH_GROUPS groups, $BENCH_PLATFORMS platforms), $(nproc) cores, PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'), median of $BENCH_RUNS interleaved rounds, jit off, work_mem 256MB."
    echo
    echo "| hourly rollup of the day (serial), ms | rows in time order | opsmeter is | rows in random order | opsmeter is | target |"
    echo "|---|---:|---:|---:|---:|---|"
    echo "| \`ops_upsert_hourly\` | $ops | | $sops | | |"
    echo "| seed's SQL (GROUPING SETS + percentile_cont, upsert) | $seed | $(ratio "$seed" "$ops")× faster | $sseed | $(ratio "$sseed" "$sops")× faster | ≥ 5× |"
    echo "| scan floor (count/sum/max hash aggregation at (hour, group)) | $floor | $(ratio "$ops" "$floor")× the floor | $sfloor | $(ratio "$sops" "$sfloor")× the floor | ≤ 1.3× in order, ≤ 1.5× shuffled |"
    echo "| same design on tdigest(x, 100) | $td | $(ratio "$td" "$ops")× faster | $std | $(ratio "$std" "$sops")× faster | |"
    echo
    echo "Parallel (2 workers), rows in time order: \`ops_upsert_hourly\` $pops ms, $(ratio "$pops" "$pfloor")× the parallel floor ($pfloor ms)."
    echo "The shuffled day's hourly rows compared with the ordered day's (every column, EXCEPT both ways): $same."
    echo
    echo "Max relative error of the stored percentiles against exact \`percentile_disc\`, over every grain (overall, platform, group), rows in time order:"
    echo
    echo "| column | rows (hourly) | opsmeter hourly | opsmeter daily | seed hourly (percentile_cont) | seed daily (weighted mean / max of hours) |"
    echo "|---|---:|---:|---:|---:|---:|"
    while IFS= read -r line; do echo "| $line |"; done <<<"$acc"
    echo
    echo "opsmeter stores percentiles as whole ms (like the seed); daily rows outside α·exact + 0.5 ms: $viol."
} >"$OUT"
cat "$OUT"
"$ROOT/scripts/cluster.sh" stop .bench >/dev/null
