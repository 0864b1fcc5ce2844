# Shared by the bench scripts: a throwaway release-build cluster in .bench (BENCH_PORT, 55434)
# with opsmeter and tdigest, and a timing helper. Source it.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/common.sh"
BENCH_PORT="${BENCH_PORT:-55434}"
BENCH_RUNS="${BENCH_RUNS:-7}"

# bench_start: starts the benchmark cluster in .bench (if it is not running) with the
# benchmark settings, and sets SOCK and PSQL. opsmeter is preloaded into the postmaster, so every
# session runs the build installed when it started even if another cargo pgrx install (which
# replaces the file) runs during the benchmark.
bench_start() {
    "$ROOT/scripts/cluster.sh" start .bench "$BENCH_PORT" \
        "shared_buffers = '2GB'" "work_mem = '256MB'" "max_parallel_workers_per_gather = 0" \
        "jit = off" "max_wal_size = '4GB'" "synchronous_commit = off" "shared_preload_libraries = 'opsmeter'" \
        "listen_addresses = '127.0.0.1'"
    SOCK="$("$ROOT/scripts/cluster.sh" sockdir .bench)"
    PSQL=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$BENCH_PORT" -U postgres)
}

bench_setup() {
    "$ROOT/scripts/deps.sh"
    "$ROOT/scripts/cluster.sh" stop .bench >/dev/null
    # BENCH_SKIP_INSTALL=1 benchmarks the build installed already (e.g. while iterating on a
    # bench script); the default builds and installs the working tree first.
    if [ "${BENCH_SKIP_INSTALL:-0}" != 1 ]; then
        say "building and installing opsmeter (release)"
        install_extension bench-install.log --release
    else
        # `make test` installs a debug build (about 10x slower per sketch row): refuse to
        # benchmark anything but this tree's last release build
        local built="${CARGO_TARGET_DIR:-$ROOT/target}/release/libopsmeter.so"
        cmp -s "$built" "$("$PG_CONFIG" --pkglibdir)/opsmeter.so" \
            || die "BENCH_SKIP_INSTALL=1, but the installed opsmeter.so is not $built (make test installs a debug build): run without BENCH_SKIP_INSTALL"
    fi
    bench_start
    "${PSQL[@]}" -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS opsmeter_bench" \
        -c "CREATE DATABASE opsmeter_bench"
    "${PSQL[@]}" -d opsmeter_bench -c "CREATE EXTENSION opsmeter" -c "CREATE EXTENSION tdigest"
}

# interleaved_medians NAME=SQL ...: one session; one untimed warm-up of each query, then
# BENCH_RUNS rounds that each run every query once, in order (so drift and noise from the rest
# of the machine spread over all queries alike). Prints "NAME MEDIAN_MS" per query.
# BENCH_SETUP (SQL) runs first, e.g. SET statements. With BENCH_WITH_MIN=1 each line also
# carries the fastest round ("NAME MEDIAN_MS MIN_MS"): on a shared machine the minimum shows the
# cost without other work's interference, the median what a user sees.
interleaved_medians() {
    local pairs=("$@") names=() sqls=() i r
    for p in "${pairs[@]}"; do names+=("${p%%=*}"); sqls+=("${p#*=}"); done
    {
        echo "${BENCH_SETUP:-}"
        for i in "${!sqls[@]}"; do echo "${sqls[$i]};"; done
        echo '\timing on'
        for r in $(seq "$BENCH_RUNS"); do
            for i in "${!sqls[@]}"; do echo "${sqls[$i]};"; done
        done
    } | "${PSQL[@]}" -d opsmeter_bench -o /dev/null 2>&1 | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' \
      | awk -v n="${#sqls[@]}" -v names="${names[*]}" -v withmin="${BENCH_WITH_MIN:-0}" '
            BEGIN { split(names, nm, " ") }
            { q = (NR - 1) % n + 1; t[q, ++c[q]] = $1 }
            END {
                for (q = 1; q <= n; q++) {
                    m = c[q]; for (i = 1; i <= m; i++) v[i] = t[q, i]
                    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (v[j] < v[i]) { x = v[i]; v[i] = v[j]; v[j] = x }
                    if (withmin == 1) print nm[q], v[int((m + 1) / 2)], v[1]
                    else print nm[q], v[int((m + 1) / 2)]
                }
            }'
}

# ratio A B: A / B with two decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

# seed_pattern_pgb: the seed's claim pattern in our own words, as a pgbench script on stdout
# (bench.seed_ops: BEGIN; the oldest 100 NOT_TRUSTLOGGED rows FOR UPDATE SKIP LOCKED; one
# compare-and-set UPDATE per operation; COMMIT), for bench/queue.sh and bench/queue_rowless.sh.
seed_pattern_pgb() {
    echo 'BEGIN;'
    echo "SELECT string_agg(op_id, ',') AS ids FROM (SELECT op_id FROM bench.seed_ops WHERE trustlog_status = 'NOT_TRUSTLOGGED' ORDER BY \"timestamp\" LIMIT 100 FOR UPDATE SKIP LOCKED) c \\gset"
    for k in $(seq 100); do
        echo "UPDATE bench.seed_ops SET trustlog_status = 'TRUSTLOGGED' WHERE op_id = split_part(:ids, ',', $k) AND trustlog_status = 'NOT_TRUSTLOGGED';"
    done
    echo 'COMMIT;'
}
