#!/usr/bin/env bash
# Operations-queue throughput, claim latency as history grows, and bloat (issue: operations
# queue; SPEC §8). One run, one server:
#   bash bench/queue.sh      (BENCH_OPS=1000000 operations, BENCH_SEED_OPS=200000, BENCH_HISTORY=5000000)
# 1. Throughput: 4 pgbench clients (real connections over the socket, prepared statements) each
#    loop "claim 100, then complete those 100 by array in a second transaction" (opsmeter) against
#    the seed's pattern in our own words on a seed-shaped table (BEGIN; SELECT ... ORDER BY
#    timestamp LIMIT 100 FOR UPDATE SKIP LOCKED; one compare-and-set UPDATE per operation;
#    COMMIT). Each client runs a fixed number of batches, so afterwards exactly
#    clients x batches x 100 operations must be TRUSTLOGGED, none leased, none twice: checked.
#    opsmeter runs over the socket and over TCP on fresh tables, and once more over the socket
#    with the next million in the table of the first run (dead space reuse, autovacuum's cost).
#    Bare statements making the same two row changes per operation, none of opsmeter's
#    bookkeeping, run on the same table: what the bookkeeping costs. And a prototype of a claim
#    that writes no operation row (bench.proto_*): what a design with leases kept off the rows
#    could reach (issue: >= 3x the seed; it is not opsmeter's design, see the script).
# 2. Claim latency with 0 and with BENCH_HISTORY completed operations in the table (one client,
#    claim 100 + complete, 100 000 pending operations each time), alternated twice.
# 3. Table and index sizes after BENCH_OPS operations were processed with autovacuum on, next to
#    the freshly loaded size, and again once autovacuum has run.
# Writes bench/results/queue.md.
source "$(dirname "$0")/common.sh"
cd "$ROOT"
BENCH_OPS="${BENCH_OPS:-1000000}"
BENCH_SEED_OPS="${BENCH_SEED_OPS:-200000}"
BENCH_HISTORY="${BENCH_HISTORY:-5000000}"
CLIENTS=4
started=$(date +%s)
bench_setup
load=$(cut -d' ' -f1-3 /proc/loadavg)
DB=opsmeter_bench
q() { "${PSQL[@]}" -d "$DB" -At -c "$1"; }
# workers connect over the Unix socket and, as external workers on other hosts would, over TCP
# (loopback: the bench cluster also listens on 127.0.0.1)
PGBENCH_SOCK=("$PG_BIN/pgbench" -n -M prepared -h "$SOCK" -p "$BENCH_PORT" -U postgres)
PGBENCH_TCP=("$PG_BIN/pgbench" -n -M prepared -h 127.0.0.1 -p "$BENCH_PORT" -U postgres)
WORK="$(pg_dir .bench)/queue"
mkdir -p "$WORK"

# load N operations into TABLE (opsmeter.operations or bench.seed_ops), 1 ms apart
load_ops() {
    local table=$1 n=$2 from=${3:-1}
    q "INSERT INTO $table (op_id, op_actor, doid, producer_id, request_body_hash, op_source, op_code,
                           do_prefix, do_repository, client_ip, \"timestamp\")
       SELECT 'op-' || i, 'actor-' || i % 50, '10.100/obj-' || i, 'producer-' || i % 7, md5(i::text), 'IRP', i % 9,
              '10.100', 'repo-' || i % 3, '192.0.2.' || i % 250,
              TIMESTAMPTZ '2026-11-01 00:00+00' + i * interval '1 ms'
         FROM generate_series($from, $from + $n - 1) i" >/dev/null
}

# load_vacuumed TABLE N [FROM]: load_ops, then VACUUM ANALYZE and a checkpoint, so every timed run
# starts on a vacuumed table with no dirty pages
load_vacuumed() {
    load_ops "$@"
    q "VACUUM ANALYZE $1" >/dev/null; q "CHECKPOINT" >/dev/null
}

# the seed's table in our own words: its columns, a primary key, an index for its claim query
q "CREATE SCHEMA IF NOT EXISTS bench;
   DROP TABLE IF EXISTS bench.seed_ops;
   CREATE TABLE bench.seed_ops (LIKE opsmeter.operations INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
   ALTER TABLE bench.seed_ops ADD PRIMARY KEY (op_id);
   CREATE INDEX ON bench.seed_ops (trustlog_status, \"timestamp\");" >/dev/null

cat >"$WORK/opsmeter.pgb" <<'EOF'
SELECT coalesce(array_agg(op_id)::text, '{}') AS ids, coalesce(min(lease_token::text), '00000000-0000-0000-0000-000000000000') AS tok FROM ops_op_claim(100, '5 minutes') \gset
SELECT ops_op_complete(:ids::text[], :tok::uuid);
EOF
seed_pattern_pgb >"$WORK/seed.pgb"

# Bare statements: the same two row changes per operation on the same table (lock and lease the
# oldest 100 fresh rows in one statement; compare-and-set them to TRUSTLOGGED by id and token in
# a second transaction), without opsmeter's bookkeeping (no walk start, no lease record, no
# expired-lease or retry handling, no PL/pgSQL): what the bookkeeping costs, or saves (without
# the walk start the claim passes the dead index entries of completed rows until VACUUM).
cat >"$WORK/bare.pgb" <<'EOF2'
WITH fresh AS (SELECT o.ctid AS tid FROM opsmeter.operations o WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' AND o.available_at = '-infinity' AND o.lease_token IS NULL ORDER BY o.available_at, o."timestamp" LIMIT 100 FOR UPDATE SKIP LOCKED), leased AS (UPDATE opsmeter.operations o SET lease_token = '00000000-0000-4000-8000-000000000001', lease_expires_at = now() + interval '5 minutes' WHERE o.ctid = ANY (ARRAY(SELECT f.tid FROM fresh f)) RETURNING o.op_id, o.lease_token) SELECT coalesce(array_agg(op_id)::text, '{}') AS ids, coalesce(min(lease_token::text), '00000000-0000-0000-0000-000000000000') AS tok FROM leased \gset
UPDATE opsmeter.operations SET trustlog_status = 'TRUSTLOGGED', lease_token = NULL, lease_expires_at = NULL, available_at = NULL WHERE op_id = ANY (:ids::text[]) AND trustlog_status = 'NOT_TRUSTLOGGED' AND lease_token = :tok::uuid;
EOF2

# A claim that writes no operation row, as a bound for such a design (not opsmeter's; what it
# leaves out: late inserts behind the walk start, retries, expired leases, failures, and claims
# inside long transactions, which would hold every other claimer up): claimers queue on the
# one-row walk start (FOR UPDATE, held to commit), read the next 100 fresh rows after it, move
# it past them and record the lease in a lease row only; the completion deletes that lease row
# and compare-and-sets the rows it listed. Timestamps are distinct in this data, so the walk
# start is a timestamp.
q "DROP TABLE IF EXISTS bench.proto_ops, bench.proto_bound, bench.proto_leases;
   CREATE TABLE bench.proto_ops (LIKE opsmeter.operations INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
       WITH (fillfactor = 50);
   ALTER TABLE bench.proto_ops ADD PRIMARY KEY (op_id);
   CREATE INDEX ON bench.proto_ops (\"timestamp\") WHERE trustlog_status = 'NOT_TRUSTLOGGED';
   CREATE TABLE bench.proto_bound (claim_from timestamptz NOT NULL);
   CREATE TABLE bench.proto_leases (token uuid PRIMARY KEY, expires_at timestamptz NOT NULL, ids text[] NOT NULL);" >/dev/null
cat >"$WORK/proto.pgb" <<'EOF3'
WITH b AS (SELECT claim_from FROM bench.proto_bound FOR UPDATE), picked AS (SELECT o.op_id, o."timestamp" FROM bench.proto_ops o WHERE o.trustlog_status = 'NOT_TRUSTLOGGED' AND o."timestamp" > (SELECT claim_from FROM b) ORDER BY o."timestamp" LIMIT 100), moved AS (UPDATE bench.proto_bound SET claim_from = (SELECT max(p."timestamp") FROM picked p) WHERE EXISTS (SELECT 1 FROM picked)), leased AS (INSERT INTO bench.proto_leases SELECT gen_random_uuid(), now() + interval '5 minutes', array_agg(p.op_id) FROM picked p HAVING count(*) > 0 RETURNING token, ids) SELECT coalesce((SELECT ids::text FROM leased), '{}') AS ids, coalesce((SELECT token::text FROM leased), '00000000-0000-0000-0000-000000000000') AS tok \gset
WITH l AS (DELETE FROM bench.proto_leases WHERE token = :tok::uuid RETURNING ids) UPDATE bench.proto_ops o SET trustlog_status = 'TRUSTLOGGED' WHERE o.op_id = ANY (ARRAY(SELECT unnest(l.ids) FROM l)) AND o.trustlog_status = 'NOT_TRUSTLOGGED';
EOF3

# run_pgbench sock|tcp SCRIPT OPS: CLIENTS clients, OPS / 100 / CLIENTS batches each; prints "OPS_PER_S"
run_pgbench() {
    local via=$1 script=$2 ops=$3 out="$WORK/$(basename "$2" .pgb)-$1.out" cmd
    if [ "$via" = tcp ]; then cmd=("${PGBENCH_TCP[@]}"); else cmd=("${PGBENCH_SOCK[@]}"); fi
    "${cmd[@]}" -c "$CLIENTS" -j 2 -t $((ops / 100 / CLIENTS)) -f "$script" "$DB" >"$out" 2>&1 \
        || { tail -5 "$out"; die "pgbench $script failed"; }
    grep -q 'number of failed transactions: 0 ' "$out" || { tail -5 "$out"; die "pgbench $script had failed transactions"; }
    awk '/^tps = / {printf "%.0f", $3 * 100}' "$out"
}

# exactly_once EXPECTED [LABEL]: exactly EXPECTED operations TRUSTLOGGED and none leased, else
# die; prints the TRUSTLOGGED count
exactly_once() {
    local expected=$1 label=${2:+ ($2)} done leased
    done=$(q "SELECT count(*) FROM opsmeter.operations WHERE trustlog_status = 'TRUSTLOGGED'")
    leased=$(q "SELECT count(*) FROM opsmeter.operations WHERE lease_token IS NOT NULL")
    [ "$done" = "$expected" ] && [ "$leased" = 0 ] \
        || die "exactly-once check failed$label: $done of $expected TRUSTLOGGED, $leased still leased"
    echo "$done"
}

# all_trustlogged TABLE EXPECTED LABEL: exactly EXPECTED rows of TABLE TRUSTLOGGED, else die;
# prints the count (the seed's and the prototype's tables, which keep no lease in the row)
all_trustlogged() {
    local done
    done=$(q "SELECT count(*) FROM $1 WHERE trustlog_status = 'TRUSTLOGGED'")
    [ "$done" = "$2" ] || die "$3: $done of $2 TRUSTLOGGED"
    echo "$done"
}

# fresh_operations: opsmeter.operations emptied and loaded with BENCH_OPS fresh operations
fresh_operations() {
    q "TRUNCATE opsmeter.operations, opsmeter.retries, opsmeter.leases" >/dev/null
    load_vacuumed opsmeter.operations "$BENCH_OPS"
}

say "throughput: $CLIENTS clients, opsmeter over $BENCH_OPS operations"
fresh_operations
fresh_sizes=$(q "SELECT pg_size_pretty(pg_relation_size('opsmeter.operations')) || ' table, '
                      || pg_size_pretty(pg_relation_size('opsmeter.operations_pkey')) || ' primary key, '
                      || pg_size_pretty(pg_relation_size('opsmeter.operations_claim')) || ' claim index'")
t0=$(date +%s.%N)
ops_rate=$(run_pgbench sock "$WORK/opsmeter.pgb" "$BENCH_OPS")
t1=$(date +%s.%N)
done_ops=$(exactly_once "$BENCH_OPS")
ops_check="$done_ops of $BENCH_OPS TRUSTLOGGED after $((BENCH_OPS / 100)) batches of 100, 0 leased"
after_sizes=$(q "SELECT pg_size_pretty(pg_relation_size('opsmeter.operations')) || ' table, '
                      || pg_size_pretty(pg_relation_size('opsmeter.operations_pkey')) || ' primary key, '
                      || pg_size_pretty(pg_relation_size('opsmeter.operations_claim')) || ' claim index; '
                      || n_dead_tup || ' dead tuples, ' || autovacuum_count || ' autovacuum runs during the run'
                   FROM pg_stat_user_tables WHERE relid = 'opsmeter.operations'::regclass")
say "waiting for autovacuum to visit opsmeter.operations (autovacuum_naptime $(q "SHOW autovacuum_naptime"))"
av0=$(q "SELECT autovacuum_count FROM pg_stat_user_tables WHERE relid = 'opsmeter.operations'::regclass")
for i in $(seq 180); do
    [ "$(q "SELECT autovacuum_count FROM pg_stat_user_tables WHERE relid = 'opsmeter.operations'::regclass")" -gt "$av0" ] && break
    sleep 1
done
vacuumed_sizes=$(q "SELECT pg_size_pretty(pg_relation_size('opsmeter.operations')) || ' table, '
                         || pg_size_pretty(pg_relation_size('opsmeter.operations_pkey')) || ' primary key, '
                         || pg_size_pretty(pg_relation_size('opsmeter.operations_claim')) || ' claim index; '
                         || n_dead_tup || ' dead tuples (' || coalesce(to_char(last_autovacuum, 'HH24:MI:SS'), 'no autovacuum yet') || ')'
                      FROM pg_stat_user_tables WHERE relid = 'opsmeter.operations'::regclass")

say "the next $BENCH_OPS operations into the vacuumed table (socket)"
load_ops opsmeter.operations "$BENCH_OPS" $((BENCH_OPS + 1))
q "ANALYZE opsmeter.operations" >/dev/null; q "CHECKPOINT" >/dev/null
av1=$(q "SELECT autovacuum_count FROM pg_stat_user_tables WHERE relid = 'opsmeter.operations'::regclass")
ops_rate_used=$(run_pgbench sock "$WORK/opsmeter.pgb" "$BENCH_OPS")
av_used=$(( $(q "SELECT autovacuum_count FROM pg_stat_user_tables WHERE relid = 'opsmeter.operations'::regclass") - av1 ))
done_ops=$(exactly_once $((2 * BENCH_OPS)) "second run")
second_sizes=$(q "SELECT pg_size_pretty(pg_relation_size('opsmeter.operations')) || ' table, '
                       || pg_size_pretty(pg_relation_size('opsmeter.operations_pkey')) || ' primary key, '
                       || pg_size_pretty(pg_relation_size('opsmeter.operations_claim')) || ' claim index; '
                       || n_dead_tup || ' dead tuples'
                    FROM pg_stat_user_tables WHERE relid = 'opsmeter.operations'::regclass")

say "throughput: $CLIENTS clients, opsmeter over $BENCH_OPS operations over TCP, fresh table"
fresh_operations
ops_rate_tcp=$(run_pgbench tcp "$WORK/opsmeter.pgb" "$BENCH_OPS")
done_tcp=$(exactly_once "$BENCH_OPS" "TCP run")

say "throughput: $CLIENTS clients, bare statements over $BENCH_OPS operations (socket), fresh table"
fresh_operations
bare_rate=$(run_pgbench sock "$WORK/bare.pgb" "$BENCH_OPS")
done_bare=$(exactly_once "$BENCH_OPS" "bare statements")

say "throughput: $CLIENTS clients, a claim that writes no operation row (prototype) over $BENCH_OPS operations (socket), fresh table"
q "TRUNCATE bench.proto_ops, bench.proto_bound, bench.proto_leases;
   INSERT INTO bench.proto_bound VALUES ('-infinity')" >/dev/null
load_vacuumed bench.proto_ops "$BENCH_OPS"
proto_rate=$(run_pgbench sock "$WORK/proto.pgb" "$BENCH_OPS")
proto_done=$(all_trustlogged bench.proto_ops "$BENCH_OPS" prototype)
proto_left=$(q "SELECT count(*) FROM bench.proto_leases")
[ "$proto_left" = 0 ] || die "prototype: $proto_left lease rows left"
q "TRUNCATE bench.proto_ops, bench.proto_leases" >/dev/null

say "throughput: $CLIENTS clients, the seed's pattern over $BENCH_SEED_OPS operations (socket, then TCP)"
load_vacuumed bench.seed_ops "$BENCH_SEED_OPS"
seed_rate=$(run_pgbench sock "$WORK/seed.pgb" "$BENCH_SEED_OPS")
seed_done=$(all_trustlogged bench.seed_ops "$BENCH_SEED_OPS" "seed pattern")
q "TRUNCATE bench.seed_ops" >/dev/null
load_vacuumed bench.seed_ops "$BENCH_SEED_OPS"
seed_rate_tcp=$(run_pgbench tcp "$WORK/seed.pgb" "$BENCH_SEED_OPS")
seed_done_tcp=$(all_trustlogged bench.seed_ops "$BENCH_SEED_OPS" "seed pattern over TCP")

# claim latency: one client, 100 000 pending operations, with HISTORY completed ones beside them
latency() {
    local history=$1 out="$WORK/latency-$1.out"
    q "TRUNCATE opsmeter.operations, opsmeter.retries, opsmeter.leases" >/dev/null
    if [ "$history" -gt 0 ]; then
        load_ops opsmeter.operations "$history" 1
        q "UPDATE opsmeter.operations SET trustlog_status = 'TRUSTLOGGED', available_at = NULL" >/dev/null
    fi
    load_vacuumed opsmeter.operations 100000 $((history + 1))
    "${PGBENCH_SOCK[@]}" -c 1 -t 500 -r -f "$WORK/opsmeter.pgb" "$DB" >"$out" 2>&1 || { tail -5 "$out"; die "latency run failed"; }
    # per-statement average latencies (ms), in script order: claim, complete
    awk '/^statement latencies/ {on = 1; next} on && NF > 2 {v[++n] = $1} END {print v[1], v[2]}' "$out"
}
# alternated twice (0, history, 0, history): one pair of runs moves with the VM by as much as the
# history costs
lat0_claim=""; lat0_complete=""; latN_claim=""; latN_complete=""
for round in 1 2; do
    say "claim latency with 0 completed operations in the table (round $round of 2)"
    read -r c d < <(latency 0)
    lat0_claim+="${lat0_claim:+, }$c"; lat0_complete+="${lat0_complete:+, }$d"
    say "claim latency with $BENCH_HISTORY completed operations in the table (round $round of 2)"
    read -r c d < <(latency "$BENCH_HISTORY")
    latN_claim+="${latN_claim:+, }$c"; latN_complete+="${latN_complete:+, }$d"
done
hist_size=$(q "SELECT pg_size_pretty(pg_relation_size('opsmeter.operations')) || ' table, '
                    || pg_size_pretty(pg_relation_size('opsmeter.operations_claim')) || ' claim index'")
elapsed=$(( $(date +%s) - started ))

ratio_seed=$(ratio "$ops_rate" "$seed_rate")
ratio_seed_tcp=$(ratio "$ops_rate_tcp" "$seed_rate_tcp")
mkdir -p bench/results
cat >bench/results/queue.md <<EOF
# operations-queue benchmark

\`bash bench/queue.sh\` — $(date -u +%F), $(nproc) cores (shared with other work; load average $load at the start), PostgreSQL $(q "SHOW server_version" | cut -d' ' -f1), the release build, preloaded, shared_buffers 2GB, synchronous_commit off, fsync off, autovacuum on (defaults, plus opsmeter's table settings). The whole run took ${elapsed} s.

## Throughput: $CLIENTS concurrent workers (pgbench, prepared statements, one connection each)

| pattern | operations | ops/s, Unix socket | ops/s, TCP (loopback) |
|---|---:|---:|---:|
| **opsmeter**: \`ops_op_claim(100)\`, then \`ops_op_complete(ids, token)\` in a second transaction | $BENCH_OPS each | **$ops_rate** | **$ops_rate_tcp** |
| seed's pattern: one transaction of \`SELECT … FOR UPDATE SKIP LOCKED LIMIT 100\` + 100 compare-and-set \`UPDATE\`s, on a seed-shaped table | $BENCH_SEED_OPS each | $seed_rate | $seed_rate_tcp |
| opsmeter ÷ seed | | **${ratio_seed}×** | **${ratio_seed_tcp}×** |
| bare statements: opsmeter's two row changes per operation without its bookkeeping (see the script) | $BENCH_OPS | $bare_rate | |
| opsmeter ÷ bare statements | | $(ratio "$ops_rate" "$bare_rate")× | |
| prototype of a claim that writes no operation row (not opsmeter's design; see the script) | $BENCH_OPS | $proto_rate | |
| prototype ÷ seed | | $(ratio "$proto_rate" "$seed_rate")× | |
| opsmeter, the next $BENCH_OPS in the same table after the socket run and its autovacuum ($av_used autovacuum runs of the table during it) | $BENCH_OPS | $ops_rate_used | |

Every run starts on a freshly loaded, vacuumed table but the third opsmeter row, which processes
the second million in the table of the first (so it also shows the dead space being reused, and
what autovacuum of the bigger table costs the workers on 2 cores). Exactly once, checked after
the runs: opsmeter $ops_check; after the second million $done_ops TRUSTLOGGED, 0 leased; over
TCP $done_tcp of $BENCH_OPS TRUSTLOGGED, 0 leased; bare statements $done_bare of $BENCH_OPS
TRUSTLOGGED, 0 leased; prototype $proto_done of $BENCH_OPS TRUSTLOGGED, 0 lease rows left; seed pattern $seed_done and $seed_done_tcp of
$BENCH_SEED_OPS TRUSTLOGGED.

## Claim latency as history grows (one client, 100 000 pending operations, 500 batches; two rounds, alternated)

| completed operations in the table | claim 100 (ms) | complete 100 (ms) |
|---:|---:|---:|
| 0 | $lat0_claim | $lat0_complete |
| $BENCH_HISTORY | $latN_claim | $latN_complete |

With the history: $hist_size.

## Size of opsmeter.operations, $BENCH_OPS operations

| when | size |
|---|---|
| freshly loaded, vacuumed | $fresh_sizes |
| right after all were claimed and completed | $after_sizes |
| after the next autovacuum | $vacuumed_sizes |
| after a second $BENCH_OPS were saved, claimed and completed | $second_sizes |
EOF
cat bench/results/queue.md
