#!/usr/bin/env bash
# ops_sketch aggregate speed and accuracy (issue: ops_sketch; SPEC §8).
#   bash bench/sketch.sh            (BENCH_ROWS=10000000, BENCH_RUNS=11)
# One run, one server, serial plans (max_parallel_workers_per_gather = 0, jit off), on two tables
# of the same log-normal draws: `lat`, rounded to whole ms (as the gateway logs them), and `latf`,
# not rounded (fractional doubles, as a client timing in seconds or µs-precise ms would log):
#   count(*) (scan floor), sum(x), ops_sketch(x), tdigest(x, 100) on each; then a parallel pair;
# and accuracy of ops_sketch and tdigest against exact percentile_disc.
# Writes bench/results/sketch.md.
BENCH_RUNS="${BENCH_RUNS:-11}"
source "$(dirname "$0")/common.sh"
cd "$ROOT"
BENCH_ROWS="${BENCH_ROWS:-10000000}"
bench_setup

say "generating $BENCH_ROWS log-normal latencies (1 ms .. 10 min)"
"${PSQL[@]}" -d opsmeter_bench <<SQL
SELECT setseed(0.17) \gset
CREATE TABLE latf AS
SELECT least(600000, greatest(1, 1800 * exp(0.9 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()))
                                 * CASE WHEN random() < 0.005 THEN 15 ELSE 1 END))::float8 AS x
  FROM generate_series(1, $BENCH_ROWS);
CREATE TABLE lat AS SELECT round(x) AS x FROM latf;
VACUUM (ANALYZE, FREEZE) lat, latf;
SQL
fractional=$("${PSQL[@]}" -d opsmeter_bench -Atc "SELECT count(*) FILTER (WHERE x <> round(x)) FROM latf")

say "timing (median and minimum of $BENCH_RUNS interleaved rounds)"
load_start=$(cut -d' ' -f1 /proc/loadavg)
declare -A T M
export BENCH_WITH_MIN=1
while read -r name ms min; do T[$name]=$ms; M[$name]=$min; done < <(interleaved_medians \
    "floor=SELECT count(*) FROM lat" "sum=SELECT sum(x) FROM lat" \
    "sk=SELECT ops_sketch(x) FROM lat" "td=SELECT tdigest(x, 100) FROM lat" \
    "ffloor=SELECT count(*) FROM latf" "fsum=SELECT sum(x) FROM latf" \
    "fsk=SELECT ops_sketch(x) FROM latf" "ftd=SELECT tdigest(x, 100) FROM latf")
while read -r name ms min; do T[$name]=$ms; M[$name]=$min; done < <(BENCH_SETUP="SET max_parallel_workers_per_gather = 2; SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;" \
    interleaved_medians "psum=SELECT sum(x) FROM lat" "psk=SELECT ops_sketch(x) FROM lat")
floor=${T[floor]}; sum=${T[sum]}; sk=${T[sk]}; td=${T[td]}; psum=${T[psum]}; psk=${T[psk]}
ffloor=${T[ffloor]}; fsum=${T[fsum]}; fsk=${T[fsk]}; ftd=${T[ftd]}

say "accuracy against percentile_disc"
acc=$("${PSQL[@]}" -d opsmeter_bench -At -F ' | ' <<'SQL'
WITH q AS (SELECT ARRAY[0.5, 0.9, 0.95, 0.99, 0.999]::float8[] AS qs),
r AS (
    SELECT (SELECT percentile_disc(q.qs) WITHIN GROUP (ORDER BY x) FROM lat) AS exact,
           (SELECT ops_quantiles(ops_sketch(x), q.qs) FROM lat) AS sk,
           (SELECT tdigest_percentile(x, 100, q.qs) FROM lat) AS td,
           q.qs
      FROM q
)
SELECT 'p' || (100 * qs[i])::text, exact[i],
       round(sk[i]::numeric, 2), round(100 * abs(sk[i] - exact[i])::numeric / exact[i]::numeric, 3) || ' %',
       round(td[i]::numeric, 2), round(100 * abs(td[i] - exact[i])::numeric / exact[i]::numeric, 3) || ' %'
  FROM r, generate_subscripts(r.qs, 1) i;
SQL
)
size=$("${PSQL[@]}" -d opsmeter_bench -At -c "SELECT pg_column_size(ops_sketch(x)) || ' bytes (' || ops_count(ops_sketch(x)) || ' values)' FROM lat")

mkdir -p bench/results
{
    echo "# ops_sketch benchmark"
    echo
    echo "\`bash bench/sketch.sh\` — $(date -u +%Y-%m-%d), $BENCH_ROWS rows, $(nproc) cores (a shared VM; load average $load_start at the start), PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'), $BENCH_RUNS interleaved rounds, jit off."
    echo "Ratios use the median; the minimum (the fastest round, least disturbed by other work on the machine) is shown beside it."
    echo
    echo "| query (serial) | median ms | vs sum(x) | vs tdigest(x, 100) | min ms | vs sum(x), min |"
    echo "|---|---:|---:|---:|---:|---:|"
    echo "| count(*) (scan floor) | $floor | $(ratio "$floor" "$sum") | | ${M[floor]} | $(ratio "${M[floor]}" "${M[sum]}") |"
    echo "| sum(x) | $sum | 1.00 | | ${M[sum]} | 1.00 |"
    echo "| **ops_sketch(x)** | $sk | **$(ratio "$sk" "$sum")** | **$(ratio "$sk" "$td")** | ${M[sk]} | $(ratio "${M[sk]}" "${M[sum]}") |"
    echo "| tdigest(x, 100) | $td | $(ratio "$td" "$sum") | 1.00 | ${M[td]} | $(ratio "${M[td]}" "${M[sum]}") |"
    echo
    echo "The same draws not rounded (\`latf\`: $fractional of $BENCH_ROWS values have a fractional part):"
    echo
    echo "| query (serial), fractional doubles | median ms | vs sum(x) | vs tdigest(x, 100) | min ms | vs sum(x), min |"
    echo "|---|---:|---:|---:|---:|---:|"
    echo "| count(*) (scan floor) | $ffloor | $(ratio "$ffloor" "$fsum") | | ${M[ffloor]} | $(ratio "${M[ffloor]}" "${M[fsum]}") |"
    echo "| sum(x) | $fsum | 1.00 | | ${M[fsum]} | 1.00 |"
    echo "| **ops_sketch(x)** | $fsk | **$(ratio "$fsk" "$fsum")** | **$(ratio "$fsk" "$ftd")** | ${M[fsk]} | $(ratio "${M[fsk]}" "${M[fsum]}") |"
    echo "| tdigest(x, 100) | $ftd | $(ratio "$ftd" "$fsum") | 1.00 | ${M[ftd]} | $(ratio "${M[ftd]}" "${M[fsum]}") |"
    echo
    echo "Parallel (2 workers), median: sum(x) $psum ms, ops_sketch(x) $psk ms ($(ratio "$psk" "$psum")× sum)."
    echo
    echo "Accuracy over the same $BENCH_ROWS values (α = 0.005 for ops_sketch), against exact \`percentile_disc\`:"
    echo
    echo "| quantile | exact | ops_sketch | rel. error | tdigest(100) | rel. error |"
    echo "|---|---:|---:|---:|---:|---:|"
    echo "$acc" | awk -F ' [|] ' '{printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6}'
    echo
    echo "Stored size of the whole-table sketch: $size."
} | tee bench/results/sketch.md
"$ROOT/scripts/cluster.sh" stop .bench >/dev/null
