#!/usr/bin/env bash
# Concurrency test for billing from cumulative counters (0.6.0), with several real sessions
# against a running server.
#   tests/concurrency/billing.sh SOCKDIR PORT
# The stream (conc.stream, a pure function of the parameters): NODES storage nodes (n1 without
# env, n2 in env prod, n3 with env "", ...) report ACCOUNTS accounts' cumulative byte counters
# every 10 s for STEPS steps from 2026-11-30T23:55:00Z, so the quota period changes mid-stream.
# Counters only grow (some not at all, some accounts appear late, not every account on every
# node). Half the accounts have a profile with a small included quota (0.000001 x 1.5 per
# byte), the others the database's default settings (60000 bytes, 0.0000003 x 2), so included
# quota runs out during the stream and ledger rows of different nodes compete for one quota row.
# Pages (conc.pages): each node's snapshots cut into overlapping pages (page k = steps
# [5k, 5k + 10), snapshots in ascending, descending or shuffled order), pages mixing every node
# (upper-case account ids, a duplicated snapshot) and one page with a node's whole stream.
# WORKERS psql sessions, released at once, each ingest every page, each in its own order (half of
# them roughly chronological, half shuffled), as fast as they can, while another session
# re-ingests random already ingested pages, alone or several in one call. Every call logs its
# result in the same transaction as the call (conc.calls; seq is drawn after the call, before its
# commit). Afterwards:
# 1. no session failed (no deadlock, no unique violation, no serialization error), every call
#    returned status ok, calls overlapped on shared nodes, and each re-ingest was all replays;
# 2. per (storage node, account): the ledger bytes = the minute buckets' bytes = the last counter
#    value of the stream (whatever order the pages came in), and the checkpoint is the last sample;
# 3. every ledger row: bytes = included + billable, amount = billable x price x multiplier
#    exactly, its id unique and the UUIDv5 of node|account|minute (recomputed by python3's uuid);
# 4. every quota row = the sums of its ledger rows (exact numeric amount), within its included
#    quota, and included = least(quota, bytes of the account in the period);
# 5. processed_samples over all calls = samples sent; new samples <= distinct samples of the
#    stream; re-ingesting every page serially, and everything in one call, writes nothing and
#    changes no row;
# 6. replaying the calls serially in their commit order (seq) reproduces every call's counts and
#    every row exactly; ingesting the pages serially in chronological order bills the same bytes
#    per (node, account) and per account (which minute, hence which month, bytes land in depends
#    on the order pages arrive: a late sample is a replay and the next delta covers it).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/scripts/common.sh"
SOCK="${1:?socket dir}"; PORT="${2:?port}"
NODES="${NODES:-3}"; ACCOUNTS="${ACCOUNTS:-200}"; STEPS="${STEPS:-60}"; WORKERS="${WORKERS:-6}"
SEED="${SEED:-$RANDOM}"   # the workers' page orders (printed; SEED=... reproduces the orders)
START='2026-11-30 23:55:00+00'
DB=opsmeter_concurrency_billing
PSQL=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres)
LOGS="$(pg_dir .test)"
BARRIER=4343   # advisory lock key the sessions wait on
cd /
q() { "${PSQL[@]}" -d "$DB" -At -c "$1"; }

"${PSQL[@]}" -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
"${PSQL[@]}" -d "$DB" >/dev/null <<SQL
CREATE EXTENSION opsmeter;
-- accounts without a profile: these settings
ALTER DATABASE $DB SET opsmeter.billing_included_quota_bytes = '60000';
ALTER DATABASE $DB SET opsmeter.billing_price_per_byte = '0.0000003';
ALTER DATABASE $DB SET opsmeter.billing_multiplier = '2';
CREATE SCHEMA conc;
-- conc.h(m, from, hexdigits): a number from hex digits of an md5
CREATE FUNCTION conc.h(m text, f integer, n integer) RETURNS bigint LANGUAGE sql IMMUTABLE
AS \$\$ SELECT ('x' || lpad(substr(m, f, n), 16, '0'))::bit(64)::bigint \$\$;

-- node i: n<i>; env absent (i % 3 = 1), 'prod' (i % 3 = 2) or '' (i % 3 = 0)
CREATE TABLE conc.nodes AS
SELECT i AS node, 'n' || i AS node_id,
       CASE i % 3 WHEN 1 THEN NULL WHEN 2 THEN 'prod' ELSE '' END AS env,
       CASE WHEN i % 3 = 2 THEN 'prod:n' || i ELSE 'n' || i END AS storage_node_id
  FROM generate_series(1, $NODES) i;

-- even accounts have a profile (quota 0 .. 120000); the others the database's settings
CREATE TABLE conc.accounts AS
SELECT a, md5('account-' || a)::uuid AS account_id,
       CASE WHEN a % 4 = 1 THEN conc.h(md5('first-' || a), 1, 4) % 30 ELSE 0 END AS first_step,
       a % 2 = 0 AS profiled,
       CASE WHEN a % 2 = 0 THEN conc.h(md5('quota-' || a), 1, 4) % 9 * 15000 ELSE 60000 END AS quota,
       CASE WHEN a % 2 = 0 THEN 0.000001 * 1.5 ELSE 0.0000003 * 2 END AS unit,
       CASE WHEN a % 2 = 0 THEN 'conc-v1' ELSE 'default' END AS version
  FROM generate_series(1, $ACCOUNTS) a;
SELECT count(billing_profile_upsert(account_id, quota, 0.000001, 1.5, 'conc-v1'))
  FROM conc.accounts WHERE profiled;

-- the counters: account a is on node n unless (a + n) % 5 = 0, from its first_step on; every
-- step it grows by 0 (a quarter of the time, always for a % 37 = 0) or up to 999 x (1 + a % 7)
CREATE TABLE conc.stream AS
SELECT n.node, n.storage_node_id, s.step, a.a, a.account_id,
       TIMESTAMPTZ '$START' + s.step * interval '10 seconds' AS sampled_at,
       sum(g.grow) OVER (PARTITION BY n.node, a.a ORDER BY s.step)::bigint AS value
  FROM conc.nodes n, conc.accounts a, generate_series(0, $STEPS - 1) s(step),
       LATERAL (SELECT CASE WHEN a.a % 37 = 0 OR conc.h(m, 1, 2) % 4 = 0 THEN 0
                            ELSE conc.h(m, 3, 4) % 1000 * (1 + a.a % 7) END AS grow
                  FROM (SELECT md5(n.node || '/' || a.a || '/' || s.step) AS m) x) g
 WHERE (a.a + n.node) % 5 <> 0 AND s.step >= a.first_step;
CREATE INDEX ON conc.stream (node, step);
ANALYZE conc.stream;

-- conc.snap(node, step, upper): the node's snapshot at that step (samples shuffled)
CREATE FUNCTION conc.snap(nd integer, st integer, up boolean) RETURNS jsonb LANGUAGE sql STABLE AS \$\$
SELECT jsonb_build_object(
           'node_id', n.node_id,
           'sampled_at', to_char((TIMESTAMPTZ '$START' + st * interval '10 seconds') AT TIME ZONE 'UTC',
                                 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
           'samples', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                           'account_id', CASE WHEN up THEN upper(s.account_id::text) ELSE s.account_id::text END,
                                           'cumulative_bytes', s.value) ORDER BY md5(s.a || '/' || st))
                                  FROM conc.stream s WHERE s.node = nd AND s.step = st), '[]'))
       || CASE WHEN n.env IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('env', n.env) END
  FROM conc.nodes n WHERE n.node = nd
\$\$;

CREATE TABLE conc.pages (page serial PRIMARY KEY, kind text, source_id text, snapshots jsonb,
                         samples bigint, nodes text[]);
-- per node: page k = steps [5k, 5k + 10), in ascending, descending or shuffled order
INSERT INTO conc.pages (kind, source_id, snapshots)
SELECT 'node', 'src-' || n.node_id,
       (SELECT jsonb_agg(conc.snap(n.node, st, false)
                         ORDER BY CASE k % 3 WHEN 0 THEN st WHEN 1 THEN -st ELSE conc.h(md5(k || '/' || st), 1, 6) END)
          FROM generate_series(5 * k, least($STEPS - 1, 5 * k + 9)) st)
  FROM conc.nodes n, generate_series(0, ($STEPS - 1) / 5) k
 ORDER BY k, n.node;
-- mixed: steps [7m + 3, 7m + 11) of every node, shuffled, upper-case ids, the first one twice
INSERT INTO conc.pages (kind, source_id, snapshots)
SELECT 'mixed', 'src-mixed', j || jsonb_build_array(j -> 0)
  FROM generate_series(0, ($STEPS - 4) / 7) m,
       LATERAL (SELECT jsonb_agg(conc.snap(n.node, st, true) ORDER BY md5(m || '/' || n.node || '/' || st)) AS j
                  FROM conc.nodes n, generate_series(7 * m + 3, least($STEPS - 1, 7 * m + 10)) st) x
 ORDER BY m;
-- node 1's whole stream, newest first
INSERT INTO conc.pages (kind, source_id, snapshots)
SELECT 'whole', 'src-n1', jsonb_agg(conc.snap(1, st, false) ORDER BY st DESC)
  FROM generate_series(0, $STEPS - 1) st;
UPDATE conc.pages p
   SET samples = (SELECT sum(jsonb_array_length(e -> 'samples')) FROM jsonb_array_elements(p.snapshots) e),
       nodes = (SELECT array_agg(DISTINCT CASE WHEN coalesce(e ->> 'env', '') = '' THEN e ->> 'node_id'
                                               ELSE (e ->> 'env') || ':' || (e ->> 'node_id') END)
                  FROM jsonb_array_elements(p.snapshots) e);

-- sources: one per node, checked, and one for mixed pages
SELECT count(billing_source_upsert('src-' || node_id, node_id, env)) FROM conc.nodes;
SELECT billing_source_upsert('src-mixed');

-- the calls: the pages of a call, concatenated in this order, what it was sent and returned.
-- seq is drawn after billing_ingest returned, before the commit, so calls that share a storage
-- node or a quota row (whose locks are held until the commit) are in seq order.
CREATE SEQUENCE conc.seq;
CREATE TABLE conc.calls (seq bigint PRIMARY KEY, worker integer, kind text, pages integer[],
                         sent bigint, nodes text[], started timestamptz, finished timestamptz,
                         result jsonb);
CREATE TABLE conc.stop ();
CREATE FUNCTION conc.snaps(ps integer[]) RETURNS jsonb LANGUAGE sql STABLE AS \$\$
SELECT coalesce(jsonb_agg(e ORDER BY u.o, x.i), '[]')
  FROM unnest(ps) WITH ORDINALITY u(p, o) JOIN conc.pages g ON g.page = u.p,
       jsonb_array_elements(g.snapshots) WITH ORDINALITY x(e, i)
\$\$;
CREATE FUNCTION conc.source(ps integer[]) RETURNS text LANGUAGE sql STABLE AS \$\$
SELECT CASE WHEN cardinality(ps) = 1 THEN (SELECT source_id FROM conc.pages WHERE page = ps[1]) ELSE 'src-mixed' END
\$\$;
-- conc.call(worker, kind, pages): one billing_ingest of these pages, logged
CREATE FUNCTION conc.call(w integer, k text, ps integer[]) RETURNS jsonb LANGUAGE plpgsql AS \$\$
DECLARE
    snaps jsonb := conc.snaps(ps);
    src text := conc.source(ps);
    t0 timestamptz := clock_timestamp();
    r jsonb;
BEGIN
    r := billing_ingest(src, snaps);
    INSERT INTO conc.calls
    SELECT nextval('conc.seq'), w, k, ps, (SELECT sum(samples) FROM conc.pages WHERE page = ANY (ps)),
           (SELECT array_agg(DISTINCT n) FROM conc.pages, unnest(nodes) n WHERE page = ANY (ps)),
           t0, clock_timestamp(), r;
    RETURN r;
END
\$\$;

-- the billing state without timestamps, as rows of text (for comparing two runs)
CREATE VIEW conc.state AS
SELECT 'ledger' AS t, format('%s %s %s %s %s %s %s %s %s', id, storage_node_id, account_id, minute, bytes,
                             included_bytes, billable_bytes, amount, pricing_rule_version) AS r
  FROM opsmeter.billing_ledger
UNION ALL SELECT 'minutes', format('%s %s %s %s', storage_node_id, account_id, minute, bytes) FROM opsmeter.billing_minutes
UNION ALL SELECT 'checkpoints', format('%s %s %s %s', storage_node_id, account_id, sampled_at, cumulative_bytes)
  FROM opsmeter.billing_checkpoints
UNION ALL SELECT 'quota', format('%s %s %s %s %s %s', account_id, period_start, included_quota_bytes,
                                 included_used_bytes, billable_bytes, amount) FROM opsmeter.billing_quota;
-- the whole billing state, timestamps included, as one md5
CREATE VIEW conc.state_md5 AS
SELECT md5(string_agg(r, '|' ORDER BY r)) FROM (
    SELECT 'l' || l::text AS r FROM opsmeter.billing_ledger l
    UNION ALL SELECT 'm' || m::text FROM opsmeter.billing_minutes m
    UNION ALL SELECT 'c' || c::text FROM opsmeter.billing_checkpoints c
    UNION ALL SELECT 'q' || q::text FROM opsmeter.billing_quota q) s;
-- per (node, account) and per (account, period), the bytes billed
CREATE VIEW conc.node_totals AS
SELECT storage_node_id, account_id, sum(bytes) AS bytes FROM opsmeter.billing_ledger GROUP BY 1, 2;
CREATE VIEW conc.period_totals AS
SELECT account_id, period_start, included_used_bytes, billable_bytes, amount FROM opsmeter.billing_quota;
-- the last sample of each (node, account)
CREATE VIEW conc.last AS
SELECT DISTINCT ON (storage_node_id, account_id) storage_node_id, account_id, sampled_at, value
  FROM conc.stream ORDER BY storage_node_id, account_id, step DESC;
SQL

npages=$(q "SELECT count(*) FROM conc.pages")
distinct_samples=$(q "SELECT count(*) FROM conc.stream")

# barrier N: holds the advisory lock BARRIER until N sessions wait for it (30 s at most), then lets
# them all go. Returns once the lock is held; the holder runs in the background as BARRIER_PID.
barrier() {
    local n=$1 i
    "${PSQL[@]}" -d "$DB" -At -c "SELECT pg_advisory_lock($BARRIER)" \
        -c "DO \$\$ BEGIN FOR i IN 1..600 LOOP
              EXIT WHEN (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $BARRIER AND NOT granted
                            AND database = (SELECT oid FROM pg_database WHERE datname = current_database())) >= $n;
              PERFORM pg_sleep(0.05); END LOOP; END \$\$" \
        -c "SELECT pg_advisory_unlock($BARRIER)" >/dev/null &
    BARRIER_PID=$!
    for i in $(seq 200); do
        [ "$(q "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $BARRIER AND granted
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")" = 1 ] && return 0
        sleep 0.05
    done
    die "the barrier lock was never taken"
}
WAIT_BARRIER="SELECT pg_advisory_lock_shared($BARRIER); SELECT pg_advisory_unlock_shared($BARRIER);"

# worker W: every page once, in its own order (odd workers: roughly in page order, pages moved
# up to 5 places; even ones: shuffled), one call and commit each
worker_sql() {
    cat <<SQL
SET application_name = 'conc-billing';
$WAIT_BARRIER
DO \$\$
DECLARE p integer;
BEGIN
    FOREACH p IN ARRAY ARRAY(SELECT page FROM conc.pages ORDER BY CASE WHEN $1 % 2 = 1 THEN page + conc.h(md5('$SEED/$1/' || page), 1, 4) % 6
                                                                     ELSE conc.h(md5('$SEED/$1/' || page), 1, 8) END, page) LOOP
        PERFORM conc.call($1, 'first', ARRAY[p]);
        COMMIT;
    END LOOP;
END \$\$;
SQL
}
# the re-ingester: until conc.stop has a row, pages whose first call has committed, one at a
# time or two to four in one call
again_sql() {
    cat <<SQL
SET application_name = 'conc-billing';
$WAIT_BARRIER
DO \$\$
DECLARE ps integer[]; i integer := 0;
BEGIN
    LOOP
        EXIT WHEN EXISTS (SELECT FROM conc.stop) OR i >= 100000;
        i := i + 1;
        SELECT array_agg(page) INTO ps
          FROM (SELECT page FROM (SELECT DISTINCT unnest(pages) AS page FROM conc.calls WHERE kind = 'first') d
                 ORDER BY random() LIMIT CASE WHEN i % 2 = 0 THEN 1 ELSE 2 + i % 3 END) x;
        IF ps IS NULL THEN
            PERFORM pg_sleep(0.01);
        ELSE
            PERFORM conc.call(0, 'again', ps);
        END IF;
        COMMIT;
    END LOOP;
END \$\$;
SQL
}

rm -f "$LOGS"/billing-worker-*.out "$LOGS"/billing-worker-*.err
started=$(date +%s%N)
barrier $((WORKERS + 1))
again_sql | "${PSQL[@]}" -d "$DB" >"$LOGS/billing-worker-0.out" 2>"$LOGS/billing-worker-0.err" &
again_pid=$!
pids=()
for w in $(seq "$WORKERS"); do
    worker_sql "$w" | "${PSQL[@]}" -d "$DB" >"$LOGS/billing-worker-$w.out" 2>"$LOGS/billing-worker-$w.err" &
    pids+=($!)
done
rcs=()
for i in "${!pids[@]}"; do rc=0; wait "${pids[$i]}" || rc=$?; rcs[$((i + 1))]=$rc; done
q "INSERT INTO conc.stop DEFAULT VALUES" >/dev/null
rc=0; wait "$again_pid" || rc=$?; rcs[0]=$rc
wait "$BARRIER_PID" || die "the barrier session failed"
elapsed=$(( ($(date +%s%N) - started) / 100000000 ))
elapsed="$((elapsed / 10)).$((elapsed % 10))"

# --- 1. no session failed; every call ok; calls did overlap; re-ingests were all replays --------
failed=()
for w in $(seq 0 "$WORKERS"); do
    if [ "${rcs[$w]}" != 0 ] || [ -s "$LOGS/billing-worker-$w.err" ]; then
        echo "session $w (0: the re-ingester) exited with ${rcs[$w]}, its stderr:" >&2
        grep -v '^ *[0-9]*: \|^ *at ' "$LOGS/billing-worker-$w.err" | head -10 >&2
        failed+=("$w")
    fi
done
[ "${#failed[@]}" = 0 ] || die "sessions ${failed[*]} failed (SEED=$SEED; logs: $LOGS/billing-worker-*.err)"
first=$(q "SELECT count(*) FROM conc.calls WHERE kind = 'first'")
again=$(q "SELECT count(*) FROM conc.calls WHERE kind = 'again'")
[ "$first" = $((WORKERS * npages)) ] || die "$first first calls logged, expected $WORKERS x $npages"
[ "$again" -gt 0 ] || die "the re-ingester made no call while the workers ran"
bad=$(q "SELECT count(*) FROM conc.calls
          WHERE result ->> 'status' <> 'ok' OR result -> 'errors' <> '[]' OR (result ->> 'skipped_samples')::bigint <> 0
             OR (result ->> 'reset_samples')::bigint <> 0")
[ "$bad" = 0 ] || die "$bad calls did not return status ok without errors, skips or resets: $(q "SELECT result FROM conc.calls WHERE result ->> 'status' <> 'ok' OR result -> 'errors' <> '[]' LIMIT 1")"
# calls that share a storage node and ran at the same time (one waited for the other's lock)
overlaps=$(q "SELECT count(*) FROM conc.calls a JOIN conc.calls b ON a.seq < b.seq AND a.nodes && b.nodes
               AND a.started < b.finished AND b.started < a.finished")
[ "$overlaps" -gt 0 ] || die "no two calls on a shared storage node overlapped in time: the test did not exercise concurrency"
echo "test $WORKERS sessions ingested $npages overlapping pages each in ${elapsed}s (SEED=$SEED), $again re-ingests alongside, no error, $overlaps overlapping call pairs on shared nodes ... ok"

bad=$(q "SELECT count(*) FROM conc.calls
          WHERE kind = 'again' AND NOT ((result ->> 'processed_samples')::bigint = sent
                                        AND (result ->> 'replayed_samples')::bigint = sent
                                        AND (result ->> 'written_minutes')::bigint = 0)")
[ "$bad" = 0 ] || die "$bad of $again re-ingests of committed pages were not all replays: $(q "SELECT result FROM conc.calls WHERE kind = 'again' AND (result ->> 'written_minutes')::bigint <> 0 LIMIT 1")"
echo "test every concurrent re-ingest of committed pages ($again, $(q "SELECT count(*) FROM conc.calls WHERE kind = 'again' AND cardinality(pages) > 1") of several pages) was all replays and wrote nothing ... ok"

# --- 2. per (node, account): ledger = buckets = the last counter value; checkpoint = last sample -
bad=$(q "WITH l AS (SELECT storage_node_id, account_id, sum(bytes) AS b FROM opsmeter.billing_ledger GROUP BY 1, 2),
              m AS (SELECT storage_node_id, account_id, sum(bytes) AS b FROM opsmeter.billing_minutes GROUP BY 1, 2)
         SELECT count(*) FROM conc.last f
           FULL JOIN l USING (storage_node_id, account_id) FULL JOIN m USING (storage_node_id, account_id)
          WHERE f.value IS NULL OR coalesce(l.b, 0) <> f.value OR coalesce(m.b, 0) <> f.value")
[ "$bad" = 0 ] || die "$bad (node, account) pairs billed other than their last counter value: $(q "WITH l AS (SELECT storage_node_id, account_id, sum(bytes) AS b FROM opsmeter.billing_ledger GROUP BY 1, 2) SELECT format('%s %s billed %s, last value %s', f.storage_node_id, f.account_id, l.b, f.value) FROM conc.last f JOIN l USING (storage_node_id, account_id) WHERE l.b <> f.value LIMIT 3")"
bad=$(q "SELECT count(*) FROM opsmeter.billing_minutes m FULL JOIN opsmeter.billing_ledger l USING (storage_node_id, account_id, minute)
          WHERE m.bytes IS DISTINCT FROM l.bytes")
[ "$bad" = 0 ] || die "$bad minute buckets differ from their ledger rows"
bad=$(q "SELECT (SELECT count(*) FROM (SELECT storage_node_id, account_id, sampled_at, value FROM conc.last
                                       EXCEPT SELECT storage_node_id, account_id, sampled_at, cumulative_bytes FROM opsmeter.billing_checkpoints) x)
              + (SELECT count(*) FROM (SELECT storage_node_id, account_id, sampled_at, cumulative_bytes FROM opsmeter.billing_checkpoints
                                       EXCEPT SELECT storage_node_id, account_id, sampled_at, value FROM conc.last) y)")
[ "$bad" = 0 ] || die "$bad checkpoints are not the last sample of their (node, account)"
echo "test per (node, account) ($(q "SELECT count(*) FROM conc.last")): ledger bytes = bucket bytes = last counter value, checkpoint = last sample ... ok"

# --- 3. every ledger row: its split, its amount, its id ------------------------------------------
bad=$(q "SELECT count(*) FROM opsmeter.billing_ledger l JOIN conc.accounts a USING (account_id)
          WHERE l.bytes <> l.included_bytes + l.billable_bytes OR l.bytes <= 0 OR l.included_bytes < 0 OR l.billable_bytes < 0
             OR l.amount <> l.billable_bytes * a.unit OR l.pricing_rule_version <> a.version")
rows=$(q "SELECT count(*) FROM opsmeter.billing_ledger")
[ "$bad" = 0 ] || die "$bad of $rows ledger rows are not bytes = included + billable, amount = billable x price x multiplier"
[ "$(q "SELECT count(*) - count(DISTINCT (storage_node_id, account_id, minute)) + count(*) - count(DISTINCT id) FROM opsmeter.billing_ledger")" = 0 ] \
    || die "ledger ids or (node, account, minute) are not unique"
ids=$(q "SELECT id || ' ' || storage_node_id || '|' || account_id || '|' || to_char(minute AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:00\"Z\"')
           FROM opsmeter.billing_ledger" \
      | python3 -c '
import sys, uuid
n = bad = 0
for line in sys.stdin:
    got, name = line.rstrip("\n").split(" ", 1)
    n += 1
    if str(uuid.uuid5(uuid.NAMESPACE_URL, name)) != got:
        bad += 1
        if bad <= 3:
            print("ledger id %s is not uuid5(URL, %r)" % (got, name), file=sys.stderr)
print(n, bad)')
[ "$ids" = "$rows 0" ] || die "ledger ids checked by python3 (rows, mismatches): $ids, expected $rows 0"
echo "test every ledger row ($rows): bytes = included + billable, exact amount, unique id = uuid5(URL, node|account|minute) ... ok"

# --- 4. quota rows: the sums of their ledger rows, included quota consumed first -----------------
quota_check() {
    q "WITH l AS (SELECT account_id, date_trunc('month', minute AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS period_start,
                         sum(bytes) AS b, sum(included_bytes) AS i, sum(billable_bytes) AS bl, sum(amount) AS am
                    FROM opsmeter.billing_ledger GROUP BY 1, 2)
       SELECT count(*) FROM l FULL JOIN opsmeter.billing_quota q USING (account_id, period_start)
         LEFT JOIN conc.accounts a USING (account_id)
        WHERE l.b IS NULL OR q.included_used_bytes IS NULL
           OR q.included_used_bytes <> l.i OR q.billable_bytes <> l.bl OR q.amount <> l.am
           OR q.included_quota_bytes <> a.quota OR q.included_used_bytes > q.included_quota_bytes
           OR q.included_used_bytes <> least(a.quota, l.b) OR q.amount <> q.billable_bytes * a.unit"
}
bad=$(quota_check)
[ "$bad" = 0 ] || die "$bad quota rows are not the sums of their ledger rows with included = least(quota, bytes)"
# Which month a delta lands in depends on the order pages arrive (a late sample is a replay, the
# next delta covers it), so the concurrent run bills November and December, or December alone
# when every node's first committed page was a December one; the serial run in page order below
# must bill both.
periods=$(q "SELECT count(DISTINCT period_start) FROM opsmeter.billing_quota")
[ "$periods" = 1 ] || [ "$periods" = 2 ] || die "the stream bills $periods quota periods, expected 2 (November and December) or, pages permitting, 1"
ran_out=$(q "SELECT count(*) FROM opsmeter.billing_quota WHERE included_used_bytes = included_quota_bytes AND billable_bytes > 0")
split=$(q "SELECT count(*) FROM opsmeter.billing_ledger WHERE included_bytes > 0 AND billable_bytes > 0")
[ "$ran_out" -gt 0 ] && [ "$split" -gt 0 ] || die "no included quota ran out during the stream: the test did not exercise quota"
echo "test quota rows ($(q "SELECT count(*) FROM opsmeter.billing_quota"), $ran_out used up, $split ledger rows split) = sums of their ledger rows, exact amounts, included = least(quota, bytes) ... ok"

# --- 5. samples counted; re-ingesting everything changes nothing ---------------------------------
sums=$(q "SELECT sum(sent) = sum((result ->> 'processed_samples')::bigint), sum(sent),
                 sum((result ->> 'processed_samples')::bigint - (result ->> 'replayed_samples')::bigint)
            FROM conc.calls")
IFS='|' read -r same sent new <<<"$sums"
[ "$same" = t ] || die "processed_samples over all calls differs from the $sent samples sent"
[ "$new" -le "$distinct_samples" ] || die "$new samples were counted as new, the stream has only $distinct_samples distinct ones (double billing)"
before=$(q "SELECT * FROM conc.state_md5")
res=$(q "SELECT count(*) FILTER (WHERE (r ->> 'written_minutes')::bigint <> 0
                                   OR (r ->> 'processed_samples')::bigint <> (r ->> 'replayed_samples')::bigint
                                   OR r ->> 'status' <> 'ok'),
                sum((r ->> 'processed_samples')::bigint)
           FROM (SELECT billing_ingest(source_id, snapshots) AS r FROM conc.pages ORDER BY page) x")
IFS='|' read -r bad processed <<<"$res"
[ "$bad" = 0 ] || die "$bad pages re-ingested serially wrote minutes or counted new samples"
[ "$processed" = "$(q "SELECT sum(samples) FROM conc.pages")" ] || die "re-ingesting every page processed $processed samples"
r=$(q "SELECT (r ->> 'written_minutes') = '0' AND r ->> 'processed_samples' = r ->> 'replayed_samples'
              AND (r ->> 'processed_samples')::bigint = $processed, r
         FROM (SELECT billing_ingest('src-mixed', (SELECT jsonb_agg(e ORDER BY page, i)
                                                     FROM conc.pages, jsonb_array_elements(snapshots) WITH ORDINALITY x(e, i))) AS r) x")
[ "${r%%|*}" = t ] || die "ingesting every page's snapshots in one call was not all replays: ${r#*|}"
after=$(q "SELECT * FROM conc.state_md5")
[ "$before" = "$after" ] || die "re-ingesting every page changed billing rows (md5 $before -> $after)"
echo "test processed_samples = $sent samples sent, $new new <= $distinct_samples distinct; re-ingesting every page serially and all in one call changes no row ... ok"

# --- 6. serial runs: in the concurrent commit order, exactly the same; in page order, same totals -
q "CREATE TABLE conc.saved AS SELECT * FROM conc.state;
   CREATE TABLE conc.saved_nodes AS SELECT * FROM conc.node_totals;
   CREATE TABLE conc.saved_periods AS SELECT * FROM conc.period_totals" >/dev/null
reset_billing() { q "TRUNCATE opsmeter.billing_checkpoints, opsmeter.billing_minutes, opsmeter.billing_ledger, opsmeter.billing_quota" >/dev/null; }
reset_billing
q "CREATE TABLE conc.replay (seq bigint PRIMARY KEY, result jsonb)" >/dev/null
q "DO \$\$
   DECLARE c record;
   BEGIN
       FOR c IN SELECT seq, pages FROM conc.calls WHERE kind = 'first' ORDER BY seq LOOP
           INSERT INTO conc.replay VALUES (c.seq, billing_ingest(conc.source(c.pages), conc.snaps(c.pages)));
           COMMIT;
       END LOOP;
   END \$\$" >/dev/null
bad=$(q "SELECT count(*) FROM conc.calls c JOIN conc.replay r USING (seq)
          WHERE (SELECT jsonb_object_agg(k, c.result -> k) FROM unnest(ARRAY['status', 'processed_samples', 'replayed_samples',
                     'reset_samples', 'skipped_samples', 'written_minutes', 'replayed_minutes']) k)
             <> (SELECT jsonb_object_agg(k, r.result -> k) FROM unnest(ARRAY['status', 'processed_samples', 'replayed_samples',
                     'reset_samples', 'skipped_samples', 'written_minutes', 'replayed_minutes']) k)")
[ "$bad" = 0 ] || die "$bad of $first calls replayed serially in commit order returned other counts than concurrently"
diff=$(q "SELECT (SELECT count(*) FROM (SELECT * FROM conc.saved EXCEPT ALL SELECT * FROM conc.state) x)
               + (SELECT count(*) FROM (SELECT * FROM conc.state EXCEPT ALL SELECT * FROM conc.saved) y)")
[ "$diff" = 0 ] || die "$diff billing rows differ between the concurrent run and its serial replay in commit order: $(q "SELECT t || ': ' || r FROM (SELECT * FROM conc.saved EXCEPT ALL SELECT * FROM conc.state) x LIMIT 3")"
echo "test a serial replay of the $first calls in commit order returns the same counts and leaves the same $(q "SELECT count(*) FROM conc.saved") rows exactly ... ok"

reset_billing
q "SELECT count(billing_ingest(source_id, snapshots)) FROM (SELECT * FROM conc.pages ORDER BY page) p" >/dev/null
bad=$(q "SELECT (SELECT count(*) FROM (TABLE conc.saved_nodes EXCEPT TABLE conc.node_totals) x)
              + (SELECT count(*) FROM (TABLE conc.node_totals EXCEPT TABLE conc.saved_nodes) y)")
[ "$bad" = 0 ] || die "$bad (node, account) totals differ between the concurrent run and a serial run in page order"
bad=$(q "SELECT count(*) FROM (SELECT account_id, sum(included_used_bytes + billable_bytes) AS b FROM conc.saved_periods GROUP BY 1) c
           FULL JOIN (SELECT account_id, sum(included_used_bytes + billable_bytes) AS b FROM conc.period_totals GROUP BY 1) s USING (account_id)
          WHERE c.b IS DISTINCT FROM s.b")
[ "$bad" = 0 ] || die "$bad accounts' billed bytes differ between the concurrent run and a serial run in page order"
bad=$(quota_check)
[ "$bad" = 0 ] || die "after the serial run in page order, $bad quota rows are not the sums of their ledger rows with included = least(quota, bytes)"
periods=$(q "SELECT count(DISTINCT period_start) FROM opsmeter.billing_quota")
[ "$periods" = 2 ] || die "the serial run in page order bills $periods quota periods, expected 2 (November and December)"
moved=$(q "SELECT count(*) FROM conc.saved_periods c FULL JOIN conc.period_totals s USING (account_id, period_start)
            WHERE (c.included_used_bytes, c.billable_bytes, c.amount) IS DISTINCT FROM (s.included_used_bytes, s.billable_bytes, s.amount)")
echo "test a serial run in page order bills the same bytes per (node, account) and per account as the concurrent run ($moved (account, month) rows differ: bytes of late pages land in later minutes) ... ok"

"${PSQL[@]}" -d postgres -c "DROP DATABASE $DB"
