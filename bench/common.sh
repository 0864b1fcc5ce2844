# Shared by the bench scripts: a throwaway release-build cluster in .bench (BENCH_PORT, 55434)
# with opsmeter and tdigest, and a timing helper. Source it.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
BENCH_PORT="${BENCH_PORT:-55434}"
BENCH_RUNS="${BENCH_RUNS:-5}"

bench_setup() {
    "$ROOT/scripts/deps.sh"
    say "building and installing opsmeter (release)"
    "$ROOT/scripts/cluster.sh" stop .bench >/dev/null
    SUDO_FLAG=""; [ "$(id -u)" = 0 ] || SUDO_FLAG="--sudo"
    cargo pgrx install --release $SUDO_FLAG --pg-config "$PG_CONFIG" >"$(pg_dir .test)/bench-install.log" 2>&1 \
        || { tail -30 "$(pg_dir .test)/bench-install.log"; die "cargo pgrx install failed"; }
    "$ROOT/scripts/cluster.sh" start .bench "$BENCH_PORT" \
        "shared_buffers = '2GB'" "work_mem = '256MB'" "max_parallel_workers_per_gather = 0" \
        "jit = off" "max_wal_size = '4GB'" "synchronous_commit = off"
    SOCK="$("$ROOT/scripts/cluster.sh" sockdir .bench)"
    PSQL=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$BENCH_PORT" -U postgres)
    "${PSQL[@]}" -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS opsmeter_bench" \
        -c "CREATE DATABASE opsmeter_bench"
    "${PSQL[@]}" -d opsmeter_bench -c "CREATE EXTENSION opsmeter" -c "CREATE EXTENSION tdigest"
}

# median_ms SQL [SETUP_SQL]: runs SQL BENCH_RUNS times in one session (after one warm-up run)
# and prints the median server-reported time in milliseconds (psql \timing).
median_ms() {
    local sql="$1" setup="${2:-}"
    {
        echo "$setup"
        echo "$sql;"   # warm-up, not timed
        echo '\timing on'
        for _ in $(seq "$BENCH_RUNS"); do echo "$sql;"; done
    } | "${PSQL[@]}" -d opsmeter_bench -o /dev/null 2>&1 | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' \
      | sort -n | awk '{a[NR] = $1} END {if (NR == 0) exit 1; print a[int((NR + 1) / 2)]}'
}
