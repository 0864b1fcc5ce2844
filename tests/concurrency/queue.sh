#!/usr/bin/env bash
# Concurrency test for the operations queue (0.5.0), with several real sessions against a
# running server.
#   tests/concurrency/queue.sh SOCKDIR PORT
# 1. NOTIFY: a session LISTENing on opsmeter_operations hears a save commit, with its count.
# 2. Exactly once under faults: WORKERS psql sessions (8) claim / complete / fail OPS (100 000)
#    operations with LEASE (1 s) leases and retry_base 10 ms, max_retries 3, while a killer
#    session pg_terminate_backend()s random workers every KILL_EVERY seconds (a killed worker is
#    restarted). Workers sometimes sleep between claim and completion (so kills land mid-batch)
#    and sometimes abandon a claimed batch (its lease must expire). Each claim, completion and
#    failure is logged in the same transaction as the call itself (so what is logged is exactly
#    what took effect). Operations whose id hashes to 0 mod 50 always fail ("poison"); others
#    fail their first or second attempt now and then. Afterwards:
#    - every poison operation is DEAD_LETTER after exactly max_retries + 1 logged failures;
#    - every other one is TRUSTLOGGED with exactly one logged completion (and no op has two);
#    - no claim ever returned an operation while another claim's lease on it was live (a lease
#      ends at its expiry or at a failure logged with its token);
#    - at least 5 workers were killed, and leases were taken over after expiry.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/scripts/common.sh"
SOCK="${1:?socket dir}"; PORT="${2:?port}"
WORKERS="${WORKERS:-8}"; OPS="${OPS:-100000}"; LEASE="${LEASE:-1 second}"; KILL_EVERY="${KILL_EVERY:-0.4}"
MAX_RETRIES=3
DB=opsmeter_concurrency_queue
PSQL=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres)
LOGS="$(pg_dir .test)"
cd /
q() { "${PSQL[@]}" -d "$DB" -At -c "$1"; }

"${PSQL[@]}" -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
"${PSQL[@]}" -d "$DB" >/dev/null <<SQL
CREATE EXTENSION opsmeter;
CREATE SCHEMA conc;
CREATE TABLE conc.claims (op_id text, token uuid, expires_at timestamptz, worker int);
CREATE TABLE conc.completions (op_id text, token uuid, worker int);
CREATE TABLE conc.failures (op_id text, token uuid, failed_at timestamptz, worker int);
-- conc.poison(op): this operation always fails
CREATE FUNCTION conc.poison(op text) RETURNS boolean LANGUAGE sql IMMUTABLE
AS \$\$ SELECT ('x' || substr(md5(op), 1, 8))::bit(32)::int % 50 = 0 \$\$;
-- conc.fails(op, attempt): whether attempt (0-based) of op fails
CREATE FUNCTION conc.fails(op text, attempt bigint) RETURNS boolean LANGUAGE sql IMMUTABLE
AS \$\$ SELECT conc.poison(op) OR (attempt < 2 AND ('x' || substr(md5(op || ':' || attempt), 1, 8))::bit(32)::int % 10 = 0) \$\$;
SQL

# --- 1. NOTIFY on save --------------------------------------------------------------------------
"${PSQL[@]}" -d "$DB" -c "LISTEN opsmeter_operations" -c "SELECT pg_sleep(1.5)" -c "SELECT 1" >"$LOGS/queue-listen.out" 2>&1 &
listener=$!
sleep 0.5
q "SELECT ops_op_save_batch((SELECT jsonb_agg(jsonb_build_object('op_id', 'n-' || i)) FROM generate_series(1, 7) i))" >/dev/null
q "SELECT ops_op_save('{\"op_id\": \"n-rec\"}', 'TRUSTLOGGED')" >/dev/null
wait "$listener"
grep -q 'Asynchronous notification "opsmeter_operations" with payload "7" received' "$LOGS/queue-listen.out" \
    || { cat "$LOGS/queue-listen.out"; die "the LISTENing session did not hear the save of 7 operations"; }
[ "$(grep -c 'Asynchronous notification' "$LOGS/queue-listen.out")" = 1 ] \
    || { cat "$LOGS/queue-listen.out"; die "a TRUSTLOGGED save must not notify"; }
echo "test LISTEN opsmeter_operations hears saves of claimable operations ... ok"
q "TRUNCATE opsmeter.operations"

# --- 2. exactly once under faults --------------------------------------------------------------
for b in $(seq 0 $(( (OPS - 1) / 10000 ))); do
    q "SELECT ops_op_save_batch((SELECT jsonb_agg(jsonb_build_object(
           'op_id', 'op-' || i, 'op_actor', 'a' || i % 7, 'op_code', i % 5,
           'timestamp', to_char(TIMESTAMPTZ '2026-11-01 00:00+00' + i * interval '1 ms', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')))
         FROM generate_series($b * 10000 + 1, least($OPS, ($b + 1) * 10000)) i))" >/dev/null
done
[ "$(q "SELECT count(*) FROM opsmeter.operations")" = "$OPS" ] || die "saving $OPS operations failed"

# One worker session: loops until nothing is left to do. Claim and its log commit together;
# then the batch is worked: failures (logged with ops_op_fail's true), completions (logged from
# ops_op_completed's ids), all in one transaction with the completion.
worker_sql() {
    cat <<SQL
SET application_name = 'conc-worker';
SET opsmeter.retry_base = '10 milliseconds';
SET opsmeter.max_retries = $MAX_RETRIES;
DO \$\$
DECLARE
    ids text[]; tok uuid; ok text[]; id text; attempt bigint; idle int := 0; t_fail timestamptz;
BEGIN
    LOOP
        WITH c AS (SELECT * FROM ops_op_claim(100, '$LEASE')),
             l AS (INSERT INTO conc.claims SELECT c.op_id, c.lease_token, c.lease_expires_at, $1 FROM c
                   RETURNING op_id, token)
        SELECT array_agg(op_id), min(token::text)::uuid INTO ids, tok FROM l;
        COMMIT;
        IF ids IS NULL THEN
            EXIT WHEN (SELECT not_trustlogged = dead_letters FROM ops_queue_stats());
            idle := idle + 1;
            EXIT WHEN idle > 3000;
            PERFORM pg_sleep(0.01);
            CONTINUE;
        END IF;
        IF random() < 0.3 THEN PERFORM pg_sleep(random() * 0.02); END IF;   -- kills land here
        CONTINUE WHEN random() < 0.03;                                       -- abandon: lease must expire
        ok := '{}';
        FOREACH id IN ARRAY ids LOOP
            SELECT count(*) INTO attempt FROM conc.failures f WHERE f.op_id = id;
            IF conc.fails(id, attempt) THEN
                -- logged with the time before the call: the lease ends inside it, and another
                -- claim may take the operation (its retry is due) before this session, descheduled,
                -- gets back from the call
                t_fail := clock_timestamp();
                IF ops_op_fail(id, 'attempt ' || attempt, tok) THEN
                    INSERT INTO conc.failures VALUES (id, tok, t_fail, $1);
                END IF;
            ELSE
                ok := ok || id;
            END IF;
        END LOOP;
        INSERT INTO conc.completions SELECT d, tok, $1 FROM ops_op_completed(ok, tok) d;
        COMMIT;
    END LOOP;
END \$\$;
SQL
}

drained() { [ "$(q "SELECT not_trustlogged = dead_letters FROM ops_queue_stats()")" = t ]; }

run_worker() {
    local w=$1 tries=0
    while :; do
        worker_sql "$w" | "${PSQL[@]}" -d "$DB" >>"$LOGS/queue-worker-$w.out" 2>&1 || true
        drained && return 0
        tries=$((tries + 1))
        [ "$tries" -lt 200 ] || { echo "worker $w restarted 200 times"; return 1; }
    done
}

rm -f "$LOGS"/queue-worker-*.out
started=$(date +%s)
pids=()
for w in $(seq "$WORKERS"); do run_worker "$w" & pids+=($!); done
# the killer: terminates a random worker backend every KILL_EVERY seconds while work is left
kills=0
while ! drained; do
    sleep "$KILL_EVERY"
    k=$(q "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                                  WHERE application_name = 'conc-worker' AND datname = current_database()
                                  ORDER BY random() LIMIT 1) t")
    kills=$((kills + k))
    [ $(( $(date +%s) - started )) -lt 600 ] || die "the queue did not drain within 10 minutes"
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=1; done
[ "$failed" = 0 ] || die "a worker gave up"
elapsed=$(( $(date +%s) - started ))
[ "$kills" -ge 5 ] || die "only $kills workers were killed: the fault injection did not happen"
echo "test $WORKERS workers drained $OPS operations in ${elapsed}s while $kills backends were killed ... ok"
q "CREATE INDEX ON conc.claims (op_id, expires_at); CREATE INDEX ON conc.completions (op_id);
   CREATE INDEX ON conc.failures (op_id, token); ANALYZE conc.claims; ANALYZE conc.completions; ANALYZE conc.failures" >/dev/null

bad=$(q "SELECT count(*) FROM opsmeter.operations o
          WHERE conc.poison(o.op_id)
            AND NOT (o.trustlog_status = 'NOT_TRUSTLOGGED'
                     AND (SELECT retry_status = 'DEAD_LETTER' AND retry_count = $MAX_RETRIES FROM opsmeter.retries r WHERE r.op_id = o.op_id)
                     AND (SELECT count(*) FROM conc.failures f WHERE f.op_id = o.op_id) = $MAX_RETRIES + 1
                     AND NOT EXISTS (SELECT FROM conc.completions c WHERE c.op_id = o.op_id))")
dead=$(q "SELECT count(*) FROM opsmeter.operations WHERE conc.poison(op_id)")
[ "$bad" = 0 ] || die "$bad of $dead poison operations are not DEAD_LETTER after exactly $((MAX_RETRIES + 1)) failures"
echo "test every poison operation ($dead) is DEAD_LETTER after exactly max_retries + 1 failures ... ok"

bad=$(q "SELECT count(*) FROM opsmeter.operations o
          WHERE NOT conc.poison(o.op_id)
            AND NOT (o.trustlog_status = 'TRUSTLOGGED'
                     AND (SELECT count(*) FROM conc.completions c WHERE c.op_id = o.op_id) = 1
                     AND NOT EXISTS (SELECT FROM opsmeter.retries r WHERE r.op_id = o.op_id))")
[ "$bad" = 0 ] || die "$bad operations are not TRUSTLOGGED with exactly one counted completion"
[ "$(q "SELECT count(*) FROM conc.completions")" = "$(q "SELECT count(*) FROM opsmeter.operations WHERE trustlog_status = 'TRUSTLOGGED'")" ] \
    || die "completions logged and TRUSTLOGGED operations differ in number"
echo "test every other operation ($((OPS - dead))) is TRUSTLOGGED with exactly one counted completion ... ok"

# consecutive claims of one operation: the later one starts no earlier than the earlier lease's
# end, unless that lease was ended by a failure logged with its token before the later claim
bad=$(q "WITH c AS (SELECT op_id, token, expires_at, expires_at - interval '$LEASE' AS claimed_at,
                           lead(expires_at - interval '$LEASE') OVER (PARTITION BY op_id ORDER BY expires_at, token) AS next_claimed_at
                      FROM conc.claims)
         SELECT count(*) FROM c
          WHERE next_claimed_at < expires_at
            AND NOT EXISTS (SELECT FROM conc.failures f
                             WHERE f.op_id = c.op_id AND f.token = c.token AND f.failed_at <= c.next_claimed_at)")
[ "$bad" = 0 ] || die "$bad claims returned an operation under another claim's live lease"
takeovers=$(q "WITH c AS (SELECT op_id, token, expires_at, lead(expires_at) OVER (PARTITION BY op_id ORDER BY expires_at) AS next_expires
                         FROM conc.claims)
               SELECT count(*) FROM c
                WHERE next_expires IS NOT NULL
                  AND NOT EXISTS (SELECT FROM conc.failures f WHERE f.op_id = c.op_id AND f.token = c.token)")
[ "$takeovers" -gt 0 ] || die "no lease expired and was taken over: the test did not exercise expiry"
echo "test no claim returned an operation under another live lease ($(q "SELECT count(*) FROM conc.claims") claims, $takeovers expired leases taken over) ... ok"

# --- 3. a claim under REPEATABLE READ --------------------------------------------------------------
# docs/queue.md: a claim in REPEATABLE READ whose snapshot predates another claim's commit of the
# same operations fails with a serialization failure (40001) instead of handing them out again.
# Ordered by an advisory lock, not by sleeps: B holds it; A takes its snapshot and waits for it;
# B claims, commits and lets go; A claims.
q "TRUNCATE opsmeter.operations, opsmeter.retries, opsmeter.leases" >/dev/null
q "SELECT ops_op_save_batch((SELECT jsonb_agg(jsonb_build_object('op_id', 'rr-' || i,
       'timestamp', '2026-11-02T00:00:0' || i || 'Z')) FROM generate_series(1, 4) i))" >/dev/null
LOCK_KEY=1869640600
a_waits="SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND objid = $LOCK_KEY AND NOT granted)"
"${PSQL[@]}" -d "$DB" -At >"$LOGS/queue-rr-b.out" 2>&1 <<SQL &
SELECT pg_advisory_lock($LOCK_KEY);
DO \$\$ BEGIN WHILE NOT ($a_waits) LOOP PERFORM pg_sleep(0.01); END LOOP; END \$\$;
SELECT string_agg(op_id, ',' ORDER BY op_id) FROM ops_op_claim(2);
SELECT pg_advisory_unlock($LOCK_KEY);
SQL
b=$!
for i in $(seq 500); do
    [ "$(q "SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND objid = $LOCK_KEY AND granted)")" = t ] && break
    sleep 0.01
done
"${PSQL[@]}" -d "$DB" -At -v ON_ERROR_STOP=0 >"$LOGS/queue-rr-a.out" 2>&1 <<SQL
\set VERBOSITY verbose
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) FROM opsmeter.operations;
SELECT pg_advisory_lock($LOCK_KEY) IS NULL;
SELECT string_agg(op_id, ',' ORDER BY op_id) FROM ops_op_claim(2);
ROLLBACK;
SQL
wait "$b" || { cat "$LOGS/queue-rr-b.out"; die "session B of the REPEATABLE READ test failed"; }
grep -qx 'rr-1,rr-2' "$LOGS/queue-rr-b.out" || { cat "$LOGS/queue-rr-b.out"; die "session B did not claim rr-1 and rr-2"; }
grep -q 'ERROR:  40001: could not serialize access due to concurrent update' "$LOGS/queue-rr-a.out" \
    || { cat "$LOGS/queue-rr-a.out"; die "a REPEATABLE READ claim over operations another claim had leased since its snapshot did not fail with 40001"; }
grep -q 'rr-' "$LOGS/queue-rr-a.out" && { cat "$LOGS/queue-rr-a.out"; die "the REPEATABLE READ claim handed out operations"; }
# a REPEATABLE READ claim whose snapshot is newer takes the rest, and nothing is leased twice
[ "$("${PSQL[@]}" -d "$DB" -At -c "BEGIN ISOLATION LEVEL REPEATABLE READ" \
        -c "SELECT string_agg(op_id, ',' ORDER BY op_id) FROM ops_op_claim(10)" -c "COMMIT")" = 'rr-3,rr-4' ] \
    || die "a REPEATABLE READ claim with a new snapshot did not take exactly rr-3 and rr-4"
[ "$(q "SELECT count(DISTINCT lease_token) || ' ' || count(*) FROM opsmeter.operations WHERE lease_token IS NOT NULL")" = '2 4' ] \
    || die "after both claims the four operations are not held by two leases"
echo "test a REPEATABLE READ claim over operations leased since its snapshot fails with 40001, then takes the rest ... ok"

"${PSQL[@]}" -d postgres -c "DROP DATABASE $DB"
