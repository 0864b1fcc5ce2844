#!/usr/bin/env bash
# A/B of the rollup's two sketches in one state (ops_sketch_pair_a/_b, 0.11.0) against two
# ops_sketch calls: same build, one session, the two alternated. The pair is hidden by renaming
# ops_sketch_pair_a, which makes ops_upsert_hourly fall back to two ops_sketch calls (as it does
# on a 0.10.0 catalog), and renamed back after each round.
#   bash bench/rollups.sh (or BENCH_GROUPS=200 BENCH_PLATFORMS=4 bash bench/rollups.sh) first:
#   this reuses the day it left in .bench (its rows shuffled); then
#   bash bench/pair_ab.sh            (RUNS=9 rounds; SETUP='SET max_parallel_workers_per_gather = 2;')
# Prints both medians and minimums, the ratio of the medians and each round's ratio.
source "$(dirname "$0")/common.sh"
bench_start >/dev/null
TIMES="$(mktemp)"
trap 'rm -f "$TIMES"' EXIT
W="'2026-11-21 00:00+00', '2026-11-22 00:00+00'"
N=${RUNS:-9}
{
  echo "${SETUP:-}"
  echo "SELECT ops_upsert_hourly($W);"
  echo '\timing on'
  for r in $(seq $N); do
    echo "SELECT ops_upsert_hourly($W);"
    echo '\timing off'
    echo "ALTER AGGREGATE ops_sketch_pair_a(float8, float8) RENAME TO ops_sketch_pair_a_hidden;"
    echo '\timing on'
    echo "SELECT ops_upsert_hourly($W);"
    echo '\timing off'
    echo "ALTER AGGREGATE ops_sketch_pair_a_hidden(float8, float8) RENAME TO ops_sketch_pair_a;"
    echo '\timing on'
  done
} | "${PSQL[@]}" -d opsmeter_bench -o /dev/null 2>&1 | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' >"$TIMES"
python3 - "$TIMES" <<'PY'
import statistics, sys
t=[float(x) for x in open(sys.argv[1]).read().split()]
p=t[0::2]; s=t[1::2]
print("pair median %.1f min %.1f | separate median %.1f min %.1f | ratio %.3f | n=%d" % (statistics.median(p), min(p), statistics.median(s), min(s), statistics.median(p)/statistics.median(s), len(p)))
print("per-round pair/separate:", " ".join("%.2f" % (a/b) for a,b in zip(p,s)))
PY
