#!/usr/bin/env bash
# A claim that writes no operation row, with its bookkeeping (bench/queue_rowless.sql; a
# measured prototype, not opsmeter's design: docs/queue-design.md), against opsmeter's claim and
# the seed's pattern, in one run on one server:
#   bash bench/queue_rowless.sh      (ROUNDS=4, BENCH_OPS=200000, BENCH_SEED_OPS=100000)
# 1. Throughput, ROUNDS rounds, each: the seed's pattern, opsmeter, the prototype, one after the
#    other on freshly loaded tables, 4 pgbench clients over the socket (the scripts of
#    bench/queue.sh). After each run every operation must be TRUSTLOGGED and no lease row left
#    (checked).
# 2. Per-statement latency with one client (pgbench -r), 100 000 operations each: opsmeter's
#    claim and completion, the prototype's, and opsmeter's claim followed by a bare
#    compare-and-set UPDATE (no function): what the completion's function adds.
# Works in a database of its own (opsmeter_qproto). Writes bench/results/queue_rowless.md.
source "$(dirname "$0")/common.sh"
cd "$ROOT"
ROUNDS="${ROUNDS:-4}"
BENCH_OPS="${BENCH_OPS:-200000}"
BENCH_SEED_OPS="${BENCH_SEED_OPS:-100000}"
CLIENTS=4
bench_setup
load=$(cut -d' ' -f1-3 /proc/loadavg)
DB=opsmeter_qproto
"${PSQL[@]}" -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
q() { "${PSQL[@]}" -d "$DB" -At -c "$1"; }
q "CREATE EXTENSION opsmeter" >/dev/null
q "CREATE SCHEMA bench" >/dev/null
"${PSQL[@]}" -d "$DB" -q -c "SET client_min_messages = warning" -f bench/queue_rowless.sql
PGBENCH=("$PG_BIN/pgbench" -n -M prepared -h "$SOCK" -p "$BENCH_PORT" -U postgres)
WORK="$(pg_dir .bench)/queue_rowless"
mkdir -p "$WORK"

# load_ops TABLE N: N operations 1 ms apart (as bench/queue.sh), vacuumed, checkpointed
load_ops() {
    q "INSERT INTO $1 (op_id, op_actor, doid, producer_id, request_body_hash, op_source, op_code,
                       do_prefix, do_repository, client_ip, \"timestamp\")
       SELECT 'op-' || i, 'actor-' || i % 50, '10.100/obj-' || i, 'producer-' || i % 7, md5(i::text), 'IRP', i % 9,
              '10.100', 'repo-' || i % 3, '192.0.2.' || i % 250,
              TIMESTAMPTZ '2026-11-01 00:00+00' + i * interval '1 ms'
         FROM generate_series(1, $2) i" >/dev/null
    q "VACUUM ANALYZE $1" >/dev/null; q "CHECKPOINT" >/dev/null
}
# fresh N: opsmeter.operations and every table of both claims emptied, N operations loaded
fresh() {
    q "TRUNCATE opsmeter.operations, opsmeter.retries, opsmeter.leases, opsmeter.queue_lowmarks, bench.f_leases;
       UPDATE bench.f_bound SET w_ts = '-infinity', w_id = '';
       UPDATE opsmeter.queue_bound SET claim_from = '-infinity'" >/dev/null
    load_ops opsmeter.operations "$1"
}
q "CREATE TABLE bench.seed_ops (LIKE opsmeter.operations INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
   ALTER TABLE bench.seed_ops ADD PRIMARY KEY (op_id);
   CREATE INDEX ON bench.seed_ops (trustlog_status, \"timestamp\");" >/dev/null

claim='SELECT coalesce(array_agg(op_id)::text, '"'{}'"') AS ids, coalesce(min(lease_token::text), '"'00000000-0000-0000-0000-000000000000'"') AS tok FROM'
printf '%s\n%s\n' "$claim ops_op_claim(100, '5 minutes') \\gset" "SELECT ops_op_complete(:ids::text[], :tok::uuid);" >"$WORK/opsmeter.pgb"
printf '%s\n%s\n' "$claim bench.f_claim(100, '5 minutes') \\gset" "SELECT bench.f_complete(:ids::text[], :tok::uuid);" >"$WORK/rowless.pgb"
printf '%s\n%s\n' "$claim ops_op_claim(100, '5 minutes') \\gset" \
    "UPDATE opsmeter.operations SET trustlog_status = 'TRUSTLOGGED', lease_token = NULL, lease_expires_at = NULL, available_at = NULL WHERE op_id = ANY (:ids::text[]) AND trustlog_status = 'NOT_TRUSTLOGGED' AND lease_token = :tok::uuid;" \
    >"$WORK/bare_completion.pgb"
seed_pattern_pgb >"$WORK/seed.pgb"

# run SCRIPT OPS [CLIENTS]: pgbench, OPS / 100 / CLIENTS batches per client; prints ops/s
run() {
    local c=${3:-$CLIENTS} out="$WORK/$(basename "$1" .pgb).out"
    "${PGBENCH[@]}" -c "$c" -j "$(( c < 2 ? 1 : 2 ))" -t $(($2 / 100 / c)) -r -f "$1" "$DB" >"$out" 2>&1 \
        || { tail -5 "$out"; die "pgbench $1 failed"; }
    grep -q 'number of failed transactions: 0 ' "$out" || { tail -5 "$out"; die "pgbench $1 had failed transactions"; }
    awk '/^tps = / {printf "%.0f", $3 * 100}' "$out"
}
# done_check TABLE N LABEL [ANY_LEASES]: N rows TRUSTLOGGED and no lease row left (any number
# with ANY_LEASES: the bare UPDATE does not remove them), else die
done_check() {
    local n left
    n=$(q "SELECT count(*) FROM $1 WHERE trustlog_status = 'TRUSTLOGGED'")
    left=$(q "SELECT (SELECT count(*) FROM opsmeter.leases) + (SELECT count(*) FROM bench.f_leases)")
    [ "$n" = "$2" ] && { [ "$left" = 0 ] || [ -n "${4:-}" ]; } || die "$3: $n of $2 TRUSTLOGGED, $left lease rows left"
}

rows=""
for r in $(seq "$ROUNDS"); do
    say "round $r of $ROUNDS: the seed's pattern ($BENCH_SEED_OPS), opsmeter ($BENCH_OPS), the prototype ($BENCH_OPS)"
    q "TRUNCATE bench.seed_ops" >/dev/null; load_ops bench.seed_ops "$BENCH_SEED_OPS"
    s=$(run "$WORK/seed.pgb" "$BENCH_SEED_OPS"); done_check bench.seed_ops "$BENCH_SEED_OPS" "seed, round $r"
    fresh "$BENCH_OPS"; o=$(run "$WORK/opsmeter.pgb" "$BENCH_OPS"); done_check opsmeter.operations "$BENCH_OPS" "opsmeter, round $r"
    fresh "$BENCH_OPS"; p=$(run "$WORK/rowless.pgb" "$BENCH_OPS"); done_check opsmeter.operations "$BENCH_OPS" "prototype, round $r"
    rows+="| $r | $s | $o | $p | $(ratio "$o" "$s")× | $(ratio "$p" "$s")× | $(ratio "$p" "$o")× |"$'\n'
done

# latency SCRIPT [ANY_LEASES]: "claim ms | completion ms" of one client over 100 000 operations
latency() {
    fresh 100000
    run "$1" 100000 1 >/dev/null
    done_check opsmeter.operations 100000 "$(basename "$1") (one client)" "${2:-}"
    awk '/^ +[0-9.]+ +[0-9]+ +(SELECT|UPDATE)/ { v[n++] = $1 } END { printf "%s | %s", v[0], v[1] }' \
        "$WORK/$(basename "$1" .pgb).out"
}
say "one client: per-statement latency"
lat_ops=$(latency "$WORK/opsmeter.pgb"); lat_proto=$(latency "$WORK/rowless.pgb"); lat_bare=$(latency "$WORK/bare_completion.pgb" any)

out=bench/results/queue_rowless.md
{
    echo "# A claim that writes no operation row, with its bookkeeping (prototype) — $(date -u +%F)"
    echo
    echo "\`bash bench/queue_rowless.sh\`, one server, $CLIENTS pgbench clients over the socket, fresh tables each run; load average at start $load. ops/s:"
    echo
    echo "| round | seed's pattern | opsmeter | prototype | opsmeter ÷ seed | prototype ÷ seed | prototype ÷ opsmeter |"
    echo "|---:|---:|---:|---:|---:|---:|---:|"
    printf '%s' "$rows"
    echo
    echo "One client, 100 000 operations, ms per statement (pgbench -r):"
    echo
    echo "| | claim of 100 | completion of 100 |"
    echo "|---|---:|---:|"
    echo "| opsmeter | $lat_ops |"
    echo "| prototype | $lat_proto |"
    echo "| opsmeter's claim, bare UPDATE as completion | $lat_bare |"
} >"$out"
cat "$out"
