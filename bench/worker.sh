#!/usr/bin/env bash
# In-database queue handlers (issue: background worker, 0.7.0; SPEC §5 and §7): operations per
# second that ops_worker_run completes with a handler whose effect is one INSERT, against the
# same work done set-based in one statement per batch (claim, insert, complete: no
# subtransaction per operation, so no per-operation failure isolation), in one run on one server.
#   bash bench/worker.sh     (BENCH_OPS=50000 operations a round, BENCH_BATCH=500, BENCH_RUNS=3)
# Each round saves BENCH_OPS fresh operations (ops_op_save_batch, 10 000 a call, not timed), then
# drains them, each batch its own transaction from one psql session (two sessions at once for
# the "2 sessions" row), timed from the first batch to the last. Checked after every round (the
# script fails otherwise): every operation TRUSTLOGGED, one effect row each, no retry row.
# Writes bench/results/worker.md.
BENCH_RUNS="${BENCH_RUNS:-3}"
source "$(dirname "$0")/common.sh"
cd "$ROOT"
OPS="${BENCH_OPS:-50000}"
BATCH="${BENCH_BATCH:-500}"

bench_setup
"${PSQL[@]}" -d opsmeter_bench >/dev/null <<SQL
CREATE TABLE bench_sent (op_id text PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION bench_send(op opsmeter.operations) RETURNS void LANGUAGE sql
    AS \$\$ INSERT INTO public.bench_sent (op_id) VALUES (op.op_id) \$\$;
SELECT ops_worker_register('bench', 'bench_send(opsmeter.operations)', $BATCH);
SQL

round=0
# save OPS operations with ids r<round>-<i>
fill() {
    round=$((round + 1))
    "${PSQL[@]}" -d opsmeter_bench -c "TRUNCATE bench_sent" >/dev/null
    for start in $(seq 0 10000 $((OPS - 1))); do
        "${PSQL[@]}" -d opsmeter_bench -Atc "SELECT ops_op_save_batch((SELECT jsonb_agg(jsonb_build_object(
            'op_id', 'r$round-' || i, 'op_code', 1,
            'timestamp', to_char((timestamptz '2026-11-30 00:00+00' + i * interval '1 ms') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')))
            FROM generate_series($start, least($start + 9999, $OPS - 1)) i))" >/dev/null
    done
}
check() {
    ok=$("${PSQL[@]}" -d opsmeter_bench -Atc "SELECT (SELECT count(*) FROM bench_sent) = $OPS
        AND (SELECT count(*) FROM opsmeter.operations WHERE op_id LIKE 'r$round-%' AND trustlog_status = 'TRUSTLOGGED') = $OPS
        AND NOT EXISTS (SELECT 1 FROM opsmeter.retries)")
    [ "$ok" = t ] || die "round $round ($1): not every operation was completed exactly once with its effect"
}
# drain SESSIONS SQL: SESSIONS psql sessions each run SQL (one batch per line, autocommit) until
# the round's operations are done; prints the seconds taken
drain() {
    local sessions="$1" sql="$2" t0 per
    per=$(( (OPS + BATCH - 1) / BATCH / sessions + 2 ))
    t0=$(date +%s.%N)
    for _ in $(seq "$sessions"); do
        yes "$sql" | head -n "$per" | "${PSQL[@]}" -d opsmeter_bench -o /dev/null &
    done
    wait
    awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.3f", a - b }'
}

WORKER="SELECT ops_worker_run('bench');"
SETBASED="WITH c AS (SELECT op_id FROM ops_op_claim($BATCH, '1 hour')), s AS (INSERT INTO bench_sent (op_id) SELECT op_id FROM c RETURNING op_id) SELECT ops_op_complete(coalesce(array_agg(op_id), '{}')) FROM s;"
declare -A T
for r in $(seq "$BENCH_RUNS"); do
    for name in worker1 worker2 setbased; do
        fill
        case $name in
            worker1) t=$(drain 1 "$WORKER") ;;
            worker2) t=$(drain 2 "$WORKER") ;;
            setbased) t=$(drain 1 "$SETBASED") ;;
        esac
        check "$name"
        T[$name]="${T[$name]:-} $t"
        echo "round $r $name: ${t}s"
    done
done
median() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
w1=$(median "${T[worker1]}"); w2=$(median "${T[worker2]}"); sb=$(median "${T[setbased]}")
rate() { awk -v n="$OPS" -v t="$1" 'BEGIN { printf "%d", n / t }'; }
mkdir -p bench/results
{
    echo "# In-database queue handlers (bench/worker.sh)"
    echo
    echo "$(date -u +%Y-%m-%d), $(nproc) cores, PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}'), opsmeter $(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1) (release build)."
    echo "$OPS operations a round, batch $BATCH, median of $BENCH_RUNS rounds; a handler whose effect is one INSERT."
    echo
    echo "| how | seconds | operations/s |"
    echo "|---|---:|---:|"
    echo "| \`ops_worker_run\`, 1 session (handler per operation, each in a subtransaction) | $w1 | $(rate "$w1") |"
    echo "| \`ops_worker_run\`, 2 sessions at once | $w2 | $(rate "$w2") |"
    echo "| set-based, 1 session (claim, INSERT, complete in one statement; no per-operation isolation) | $sb | $(rate "$sb") |"
    echo
    echo "Every round checked: all operations TRUSTLOGGED, one effect row each, no retry row."
} | tee bench/results/worker.md
"$ROOT/scripts/cluster.sh" stop .bench >/dev/null
