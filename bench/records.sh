#!/usr/bin/env bash
# Request-record store speed and history accuracy (issue: request records, 0.4.0; SPEC §8).
#   bash bench/records.sh            (BENCH_RECORDS=10000000 history rows over 30 days,
#                                     BENCH_BATCHES=200 ingest batches of 1 000, BENCH_RUNS=7)
# One run, one server, serial plans (max_parallel_workers_per_gather = 0, jit off):
#   ingest  ops_add_records, one call (and transaction) per batch of 1 000 JSON records, against
#       INSERT ... SELECT FROM jsonb_to_recordset of the same batches into bench.plain_records
#       (same columns, partitioning and index; no validation, no record_latest upkeep); both
#       into empty tables, day partitions created before the timed part; plus the reading half
#       of each (ops_add_records on batches with a bad last element; jsonb_to_recordset alone).
#   history ops_history (1 h and 1 day buckets) and ops_model_history (1 day) over 30 days, for
#       the api_type with ~60% of the rows, against bench/record_baselines.sql: the seed's query
#       (percentile_cont), the scan floor (count/sum only) and tdigest(x, 100); then a parallel
#       run of ops_history 1 h and the floor; the plans each got (auto_explain); then percentile
#       accuracy of the 1 h buckets against exact percentile_disc (tests/oracle/records_oracle.sql).
# bench_setup preloads the library, and the script checks the server ran this release build
# throughout (other work on the machine may install another build meanwhile).
# Writes bench/results/records.md.
source "$(dirname "$0")/common.sh"
cd "$ROOT"
BENCH_RECORDS="${BENCH_RECORDS:-10000000}"
BENCH_BATCHES="${BENCH_BATCHES:-200}"
INGEST_DAY=2026-11-21
FIRST_DAY=2026-10-22
LAST_DAY=2026-11-20
SINCE="$FIRST_DAY 00:00+00"
API=messages
cmd="bash bench/records.sh"
for v in BENCH_RUNS BENCH_BATCHES BENCH_RECORDS; do
    case "$v=${!v}" in BENCH_RUNS=7 | BENCH_BATCHES=200 | BENCH_RECORDS=10000000) ;; *) cmd="$v=${!v} $cmd" ;; esac
done
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
t_start=$(date +%s)
bench_setup
LIB="$("$PG_CONFIG" --pkglibdir)/opsmeter.so"
"${PSQL[@]}" -d opsmeter_bench -f tests/oracle/records_oracle.sql -f bench/record_baselines.sql >/dev/null

# bench_setup preloads opsmeter into the postmaster, so every session maps the library installed
# at the start, even if another cargo pgrx install replaces the file during the run. Check that
# it was this release build, and at the end of each phase that the postmaster still maps it.
pm_lib() { awk '/\/opsmeter\.so/ { print $5; exit }' "/proc/$(head -1 "$(pg_dir .bench)/data/postmaster.pid")/maps"; }
lib_ino=$(pm_lib)
lib_note="the release build, preloaded"
if [ -z "$lib_ino" ] || [ "$(stat -c %i "$LIB" 2>/dev/null)" != "$lib_ino" ] \
    || ! cmp -s "$(ls target/release/libopsmeter.so 2>/dev/null || echo /dev/null)" "$LIB"; then
    lib_note="NOT verified to be this release build (another install may have raced bench_setup's)"
    printf 'warning: %s\n' "opsmeter.so is $lib_note" >&2
fi
lib_guard() {
    if [ "$(pm_lib)" != "$lib_ino" ]; then
        lib_note="NOT the same library throughout (changed by the end of the $1 phase)"
        printf 'warning: %s\n' "opsmeter.so is $lib_note" >&2
    fi
}

# plan_shape SETUP QUERY: the plan nodes of the first statement QUERY runs inside a function
# (auto_explain, nested statements), e.g. "GroupAggregate < Sort (quicksort) < Append".
plan_shape() {
    "${PSQL[@]}" -d opsmeter_bench -o /dev/null -c "LOAD 'auto_explain'" -c "SET auto_explain.log_min_duration = 20" \
        -c "SET auto_explain.log_nested_statements = on" -c "SET auto_explain.log_analyze = on" \
        -c "SET auto_explain.log_timing = off" -c "SET client_min_messages = log" -c "$1" -c "$2" 2>&1 \
      | awk '/duration:/ { n++ } n == 1' \
      | sed -nE 's/^[[:space:]]*(->[[:space:]]+)?((Finalize |Partial )?(GroupAggregate|HashAggregate|MixedAggregate|Incremental Sort|Sort|Gather Merge|Gather|Parallel Append|Append))[[:space:]]+\(.*/\2/p;
                s/^[[:space:]]*Sort Method: ([a-z -]*[a-z])[[:space:]]+(Memory|Disk): ([0-9]+kB).*/(\1, \2 \3)/p;
                s/^[[:space:]]*Workers Launched: ([0-9]+).*/(\1 workers launched)/p' \
      | awk '/^\(/ { line = line " " $0; next } { line = line (line == "" ? "" : " < ") $0 } END { print line }'
}

# records_select N START SECONDS: N records in time order over SECONDS from START, as a SELECT of
# (g, api_type, metrics_key, base_url, model, success, status_code, latency_ms, created_at).
# api_types messages/responses/gemini 60/30/10 %; 50 metrics_keys with skewed traffic; 3 base_urls;
# 8 models (4/2/2 per api_type), each with its own median latency; 3% failures (429, 5xx, 529,
# 0 = timeout at 10 min); log-normal latencies (σ = 1) with a 0.5% slow tail (×20), 50 ms .. 10 min.
records_select() {
    cat <<SQL
SELECT r.g, a.api_type,
       'key-' || lpad((1 + floor(50 * power(r.u_key, 1.7)))::int::text, 2, '0') AS metrics_key,
       (ARRAY['https://api.upstream.example', 'https://relay-1.example.net', 'https://relay-2.example.net'])
           [CASE WHEN r.u_url < 0.7 THEN 1 WHEN r.u_url < 0.9 THEN 2 ELSE 3 END] AS base_url,
       m.model,
       r.u_fail >= 0.03 AS success,
       CASE WHEN r.u_fail >= 0.03 THEN 200 ELSE (ARRAY[429, 429, 500, 502, 529, 0])[1 + floor(6 * r.u_status)::int] END AS status_code,
       CASE WHEN r.u_fail < 0.03 AND r.u_status >= 5.0 / 6 THEN 600000
            ELSE least(600000, greatest(50, round(10 * (CASE WHEN r.u_fail < 0.03 THEN 400 ELSE m.median END)
                 * exp(sqrt(-2 * ln(1 - r.u1)) * cos(2 * pi() * r.u2))
                 * CASE WHEN r.u_tail < 0.005 THEN 20 ELSE 1 END) / 10)) END::float8 AS latency_ms,
       TIMESTAMPTZ '$2' + (r.g * ($3::float8 / $1)) * interval '1 second' AS created_at
  FROM (SELECT g, random() AS u_api, random() AS u_key, random() AS u_url, random() AS u_model,
               random() AS u_fail, random() AS u_status, random() AS u1, random() AS u2, random() AS u_tail
          FROM generate_series(0, $1 - 1) g) r
 CROSS JOIN LATERAL (SELECT CASE WHEN r.u_api < 0.6 THEN 'messages' WHEN r.u_api < 0.9 THEN 'responses'
                                 ELSE 'gemini' END AS api_type) a
 CROSS JOIN LATERAL (SELECT CASE a.api_type
            WHEN 'messages' THEN CASE WHEN r.u_model < 0.5 THEN 'claude-sonnet-4-5' WHEN r.u_model < 0.8 THEN 'claude-haiku-4-5'
                                      WHEN r.u_model < 0.95 THEN 'claude-opus-4-1' ELSE 'claude-3-7-sonnet' END
            WHEN 'responses' THEN CASE WHEN r.u_model < 0.6 THEN 'gpt-5' ELSE 'gpt-4.1-mini' END
            ELSE CASE WHEN r.u_model < 0.5 THEN 'gemini-2.5-pro' ELSE 'gemini-2.5-flash' END END AS model) m0
 CROSS JOIN LATERAL (SELECT m0.model, CASE m0.model WHEN 'claude-sonnet-4-5' THEN 4000 WHEN 'claude-haiku-4-5' THEN 1500
            WHEN 'claude-opus-4-1' THEN 9000 WHEN 'claude-3-7-sonnet' THEN 5000 WHEN 'gpt-5' THEN 6000
            WHEN 'gpt-4.1-mini' THEN 1200 WHEN 'gemini-2.5-pro' THEN 5000 ELSE 1000 END AS median) m
SQL
}

# ---------------------------------------------------------------------------------------------
say "generating $BENCH_BATCHES batches of 1 000 records over $INGEST_DAY (jsonb, untimed)"
"${PSQL[@]}" -d opsmeter_bench <<SQL >/dev/null
SELECT setseed(0.42);
CREATE TABLE bench.ingest_src AS $(records_select $((BENCH_BATCHES * 1000)) "$INGEST_DAY 00:00+00" 86400);
TRUNCATE bench.batches, bench.bad_batches;
INSERT INTO bench.batches
SELECT g / 1000 + 1,
       jsonb_agg(jsonb_build_object('api_type', api_type, 'metrics_key', metrics_key, 'base_url', base_url,
                                    'model', model, 'success', success, 'status_code', status_code,
                                    'latency_ms', latency_ms,
                                    'created_at', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
                 ORDER BY g)
  FROM bench.ingest_src GROUP BY g / 1000;
-- the same batches with a 1 001st element that lacks metrics_key
INSERT INTO bench.bad_batches
SELECT batch, js || jsonb_build_array(jsonb_build_object('api_type', 'messages', 'success', true)) FROM bench.batches;
DROP TABLE bench.ingest_src;
VACUUM (ANALYZE, FREEZE) bench.batches, bench.bad_batches;
-- day partitions exist before the timed part, for both
SELECT ops_create_record_partitions('$INGEST_DAY', '$INGEST_DAY'), bench.plain_day('$INGEST_DAY');
SQL
ingest_rows=$((BENCH_BATCHES * 1000))
json_bytes=$("${PSQL[@]}" -d opsmeter_bench -Atc "SELECT round(avg(octet_length(js::text)) / 1000) FROM bench.batches")

say "timing ingest (median of $BENCH_RUNS interleaved rounds, each into empty tables)"
declare -A T
while read -r name ms; do T[$name]=$ms; done < <(interleaved_medians \
    "trunc_ops=TRUNCATE opsmeter.request_records, opsmeter.record_latest" "add_ops=CALL bench.add_ops()" \
    "trunc_plain=TRUNCATE bench.plain_records" "add_plain=CALL bench.add_plain()" \
    "parse_ops=SELECT bench.parse_ops()" "parse_plain=SELECT bench.parse_plain()")
check=$("${PSQL[@]}" -d opsmeter_bench -Atc "
    SELECT (SELECT count(*) FROM opsmeter.request_records) || ' / ' || (SELECT count(*) FROM bench.plain_records)
           || ' rows, ' || (SELECT count(*) FROM opsmeter.record_latest) || ' record_latest keys, rows differ: '
           || (SELECT count(*) FROM ((TABLE opsmeter.request_records EXCEPT ALL TABLE bench.plain_records)
                                     UNION ALL (TABLE bench.plain_records EXCEPT ALL TABLE opsmeter.request_records)) d)
           || ', partitions ' || (SELECT string_agg(partition::text, ' ') FROM ops_record_partitions())")
lib_guard ingest
add_ops=${T[add_ops]}; add_plain=${T[add_plain]}; parse_ops=${T[parse_ops]}; parse_plain=${T[parse_plain]}
rps() { awk -v n="$ingest_rows" -v ms="$1" 'BEGIN {printf "%.0f", n / (ms / 1000)}'; }

# ---------------------------------------------------------------------------------------------
say "generating $BENCH_RECORDS records over $FIRST_DAY .. $LAST_DAY (INSERT ... SELECT generate_series)"
g0=$(date +%s)
"${PSQL[@]}" -d opsmeter_bench <<SQL >/dev/null
TRUNCATE opsmeter.request_records, opsmeter.record_latest, bench.plain_records;
SELECT ops_cleanup_records(TIMESTAMPTZ '$INGEST_DAY 00:00+00' + interval '24 hours');   -- drops the ingest day's partition
SELECT ops_create_record_partitions('$FIRST_DAY', '$LAST_DAY');
SELECT setseed(0.17);
INSERT INTO opsmeter.request_records (api_type, metrics_key, base_url, model, success, status_code, latency_ms, created_at)
SELECT api_type, metrics_key, base_url, model, success, status_code, latency_ms, created_at
  FROM ($(records_select "$BENCH_RECORDS" "$SINCE" $((30 * 86400)))) s;
SQL
g1=$(date +%s)
"${PSQL[@]}" -d opsmeter_bench -c "VACUUM (ANALYZE, FREEZE) opsmeter.request_records" >/dev/null
g2=$(date +%s)
read -r api_rows all_rows size < <("${PSQL[@]}" -d opsmeter_bench -At -F ' ' -c "
    SELECT count(*) FILTER (WHERE api_type = '$API'), count(*),
           pg_size_pretty((SELECT sum(pg_total_relation_size(partition)) FROM ops_record_partitions())::bigint)
      FROM opsmeter.request_records")

say "timing history (median of $BENCH_RUNS interleaved rounds)"
H="'$API', '$SINCE'"
while read -r name ms; do T[$name]=$ms; done < <(interleaved_medians \
    "ops_h=SELECT count(h.*) FROM ops_history($H, 3600) h" \
    "seed_h=SELECT count(h.*) FROM bench.seed_history($H, 3600) h" \
    "floor_h=SELECT count(h.*) FROM bench.floor_history($H, 3600) h" \
    "td_h=SELECT count(h.*) FROM bench.tdigest_history($H, 3600) h" \
    "ops_d=SELECT count(h.*) FROM ops_history($H, 86400) h" \
    "seed_d=SELECT count(h.*) FROM bench.seed_history($H, 86400) h" \
    "floor_d=SELECT count(h.*) FROM bench.floor_history($H, 86400) h" \
    "td_d=SELECT count(h.*) FROM bench.tdigest_history($H, 86400) h" \
    "ops_m=SELECT count(h.*) FROM ops_model_history($H, 86400) h" \
    "seed_m=SELECT count(h.*) FROM bench.seed_history($H, 86400, true) h" \
    "floor_m=SELECT count(h.*) FROM bench.floor_history($H, 86400, true) h" \
    "td_m=SELECT count(h.*) FROM bench.tdigest_history($H, 86400, true) h")
PAR="SET max_parallel_workers_per_gather = 2; SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;"
while read -r name ms; do T[$name]=$ms; done < <(BENCH_SETUP="$PAR" \
    interleaved_medians "pops_h=SELECT count(h.*) FROM ops_history($H, 3600) h" \
    "pfloor_h=SELECT count(h.*) FROM bench.floor_history($H, 3600) h")
lib_guard history
say "plan shapes (auto_explain of the statement inside each function)"
P0="SET max_parallel_workers_per_gather = 0"; P2="SET max_parallel_workers_per_gather = 2"
plan_ops=$(plan_shape "$P0" "SELECT count(h.*) FROM ops_history($H, 3600) h")
plan_pops=$(plan_shape "$P2" "SELECT count(h.*) FROM ops_history($H, 3600) h")
plan_zops=$(plan_shape "$PAR" "SELECT count(h.*) FROM ops_history($H, 3600) h")
plan_floor=$(plan_shape "$P0" "SELECT count(h.*) FROM bench.floor_history($H, 3600) h")
plan_pfloor=$(plan_shape "$P2" "SELECT count(h.*) FROM bench.floor_history($H, 3600) h")
plan_zfloor=$(plan_shape "$PAR" "SELECT count(h.*) FROM bench.floor_history($H, 3600) h")
plan_td=$(plan_shape "$P0" "SELECT count(h.*) FROM bench.tdigest_history($H, 3600) h")
plan_seed=$(plan_shape "$P0" "SELECT count(h.*) FROM bench.seed_history($H, 3600) h")
groups=$("${PSQL[@]}" -d opsmeter_bench -At -F ' ' -c "
    SELECT (SELECT count(*) FROM ops_history($H, 3600)), (SELECT count(*) FROM ops_history($H, 86400)),
           (SELECT count(*) FROM ops_model_history($H, 86400))")
read -r n_h n_d n_m <<<"$groups"

say "accuracy of the 1 h buckets against exact percentile_disc"
acc=$("${PSQL[@]}" -d opsmeter_bench -At -F ' | ' <<SQL
SET max_parallel_workers_per_gather = 2;
CREATE TEMP TABLE e AS SELECT * FROM oracle.rec_history($H, 3600);
CREATE TEMP TABLE o AS SELECT * FROM ops_history($H, 3600);
CREATE TEMP TABLE t AS SELECT * FROM bench.tdigest_history($H, 3600);
CREATE TEMP TABLE s AS SELECT * FROM bench.seed_history($H, 3600);
WITH j AS (
    SELECT q.name, q.i, e.requests AS n, o.requests AS on_, t.requests AS tn, s.requests AS sn,
           (ARRAY[e.latency_p50_ms, e.latency_p95_ms, e.latency_p99_ms])[q.i] AS exact,
           (ARRAY[o.latency_p50_ms, o.latency_p95_ms, o.latency_p99_ms])[q.i] AS ops,
           (ARRAY[t.latency_p50_ms, t.latency_p95_ms, t.latency_p99_ms])[q.i] AS td,
           (ARRAY[s.latency_p50_ms, s.latency_p95_ms, s.latency_p99_ms])[q.i] AS seed
      FROM e
      FULL JOIN o USING (bucket_start) FULL JOIN t USING (bucket_start) FULL JOIN s USING (bucket_start)
     CROSS JOIN (VALUES ('p50', 1), ('p95', 2), ('p99', 3)) q(name, i)
)
SELECT name, count(*) FILTER (WHERE n = on_ AND n = tn AND n = sn) || ' of ' || count(*),
       round(100 * max(abs(ops - exact) / exact)::numeric, 3) || ' %',
       count(*) FILTER (WHERE ops IS NULL OR exact IS NULL OR abs(ops - exact) > 0.005 * exact + 1e-9),
       round(100 * max(abs(td - exact) / exact)::numeric, 3) || ' %',
       round(100 * max(abs(seed - exact) / exact)::numeric, 3) || ' %'
  FROM j GROUP BY name, i ORDER BY i;
SQL
)
lib_guard accuracy
t_end=$(date +%s)

mkdir -p bench/results
{
    echo "# request-record benchmark"
    echo
    echo "\`$cmd\` — $(date -u +%Y-%m-%d), $(nproc) cores (shared with other work; load average $load_start at the start), PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'), $lib_note, median of $BENCH_RUNS interleaved rounds, jit off, work_mem 256MB, shared_buffers 2GB, synchronous_commit off, fsync off. The whole run took $((t_end - t_start)) s."
    echo
    echo "## Ingest: $BENCH_BATCHES batches of 1 000 records (one UTC day, ~$json_bytes bytes of JSON per record)"
    echo
    echo "Each batch is one statement and one transaction (a PL/pgSQL procedure looping over the stored jsonb batches, COMMIT after each), into empty tables (TRUNCATE before every round). The day partition exists before the timed part for both tables, so partition creation is not timed (ops_add_records still checks each batch's days). The plain INSERT does no validation and no record_latest upkeep."
    echo
    echo "| method (serial) | ms for $ingest_rows rows | rows/s | |"
    echo "|---|---:|---:|---|"
    echo "| **\`ops_add_records\`** (parse + check, partition check, INSERT, record_latest) | $add_ops | $(rps "$add_ops") | $(ratio "$add_plain" "$add_ops")× the plain INSERT's rate |"
    echo "| \`INSERT ... SELECT FROM jsonb_to_recordset\` into an identical table | $add_plain | $(rps "$add_plain") | |"
    echo "| reading half of ops_add_records (bad last element: parses all, writes nothing) | $parse_ops | $(rps "$parse_ops") | $(ratio "$parse_ops" "$add_ops") of ops_add_records' time |"
    echo "| reading half of the plain INSERT (\`count(t.*)\` over jsonb_to_recordset) | $parse_plain | $(rps "$parse_plain") | $(ratio "$parse_plain" "$add_plain") of the plain INSERT's time |"
    echo
    echo "After the last round: $check."
    echo
    echo "## History: $all_rows records over 30 days ($FIRST_DAY .. $LAST_DAY), $api_rows of them api_type '$API'"
    echo
    echo "Generated with INSERT ... SELECT generate_series into opsmeter.request_records in $((g1 - g0)) s, VACUUM (ANALYZE, FREEZE) $((g2 - g1)) s; $size with the index. Every query reads '$API' since $FIRST_DAY 00:00 UTC; the outer query consumes whole rows (\`SELECT count(h.*) FROM f(...) h\`)."
    echo
    echo "| ms (serial) | \`ops_history\`, 1 h ($n_h buckets) | \`ops_history\`, 1 day ($n_d) | \`ops_model_history\`, 1 day ($n_m) |"
    echo "|---|---:|---:|---:|"
    echo "| **opsmeter** | **${T[ops_h]}** | **${T[ops_d]}** | **${T[ops_m]}** |"
    echo "| seed's query (percentile_cont) | ${T[seed_h]} | ${T[seed_d]} | ${T[seed_m]} |"
    echo "| scan floor (count / FILTER / sum only) | ${T[floor_h]} | ${T[floor_d]} | ${T[floor_m]} |"
    echo "| same query on tdigest(x, 100) | ${T[td_h]} | ${T[td_d]} | ${T[td_m]} |"
    echo "| opsmeter is × faster than the seed | $(ratio "${T[seed_h]}" "${T[ops_h]}") | $(ratio "${T[seed_d]}" "${T[ops_d]}") | $(ratio "${T[seed_m]}" "${T[ops_m]}") |"
    echo "| opsmeter is × the floor | $(ratio "${T[ops_h]}" "${T[floor_h]}") | $(ratio "${T[ops_d]}" "${T[floor_d]}") | $(ratio "${T[ops_m]}" "${T[floor_m]}") |"
    echo "| opsmeter is × faster than tdigest | $(ratio "${T[td_h]}" "${T[ops_h]}") | $(ratio "${T[td_d]}" "${T[ops_d]}") | $(ratio "${T[td_m]}" "${T[ops_m]}") |"
    echo
    echo "Parallel (max_parallel_workers_per_gather = 2, parallel_setup_cost = parallel_tuple_cost = 0 as in bench/sketch.sh; with the default costs the planner, which expects one bucket per record, keeps these plans serial): \`ops_history\` 1 h ${T[pops_h]} ms (serial ÷ parallel = $(ratio "${T[ops_h]}" "${T[pops_h]}")), the floor ${T[pfloor_h]} ms (serial ÷ parallel = $(ratio "${T[floor_h]}" "${T[pfloor_h]}")); opsmeter is $(ratio "${T[pops_h]}" "${T[pfloor_h]}")× the parallel floor."
    echo
    echo "Plans of the 1 h queries (auto_explain of the statement each function runs; outermost node first):"
    echo
    echo "- \`ops_history\`: $plan_ops; 2 workers allowed: $plan_pops; and parallel costs 0: $plan_zops"
    echo "- floor: $plan_floor; 2 workers allowed: $plan_pfloor; and parallel costs 0: $plan_zfloor"
    echo "- tdigest: $plan_td"
    echo "- seed: $plan_seed"
    echo
    echo "Accuracy of the $n_h one-hour buckets against exact \`percentile_disc\` (oracle.rec_history): max relative error over all buckets; opsmeter's contract is 0.5%."
    echo
    echo "| percentile | buckets with equal counts | opsmeter | opsmeter buckets outside 0.5% | tdigest(100) | seed (percentile_cont) |"
    echo "|---|---:|---:|---:|---:|---:|"
    while IFS= read -r line; do echo "| $line |"; done <<<"$acc"
    echo
    echo "The generated latencies put about 0.5% of requests at the 10 min timeout (600 000 ms), just above p99: methods that interpolate between neighbouring values (percentile_cont, tdigest's centroids) land between the bulk and the timeouts there."
} >bench/results/records.md
cat bench/results/records.md
"$ROOT/scripts/cluster.sh" stop .bench >/dev/null
