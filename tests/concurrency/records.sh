#!/usr/bin/env bash
# Concurrency test for the request-record store and the daily stats (0.4.0), with several real
# sessions against a running server.
#   tests/concurrency/records.sh SOCKDIR PORT
# 1. SESSIONS psql sessions, released at the same instant, each send BATCHES ops_add_records
#    batches of ROWS records over the same keys and api_types (each batch lists the keys in its
#    own order), with created_at spread over DAYS UTC days that have no partition yet: they race
#    to create the same partitions and to update the same opsmeter.record_latest rows. No session
#    may fail (no deadlock, no duplicate partition); afterwards the table holds exactly the
#    records sent, ops_latest_timestamps agrees with the raw records, and there is one partition
#    per day.
# 2. For each of DS_DAYS past days, DS_SESSIONS sessions call ops_daily_stats_run for that day at
#    the same instant: exactly one returns true, none fails, one row is written and it matches the
#    oracle (tests/oracle/daily_stats_oracle.sql).
# The batches are a pure function of (session, batch) (conc.batch below), so what was sent can be
# recomputed and compared with what was stored.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/scripts/common.sh"
SOCK="${1:?socket dir}"; PORT="${2:?port}"
SESSIONS="${SESSIONS:-4}"; BATCHES="${BATCHES:-20}"; ROWS="${ROWS:-500}"; DAYS="${DAYS:-10}"
DS_SESSIONS="${DS_SESSIONS:-3}"; DS_DAYS="${DS_DAYS:-5}"
DB=opsmeter_concurrency_records
PSQL=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres)
LOGS="$(pg_dir .test)"
BARRIER=4242   # advisory lock key the sessions wait on
cd "$ROOT"

"${PSQL[@]}" -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
"${PSQL[@]}" -d "$DB" -c "CREATE EXTENSION opsmeter" -f tests/oracle/daily_stats_oracle.sql >/dev/null
# conc.batch(s, b): batch b of session s, ROWS records as ops_add_records takes them. Keys key-00
# .. key-23 and three api_types shared by all sessions, in hash order; days from 2026-10-01 (UTC);
# times given in UTC (Z) or at +05:45; base_url sometimes null, model sometimes absent, an unknown
# key sometimes; latencies multiples of 1/8 (exact in binary, so no parser can round them).
"${PSQL[@]}" -d "$DB" >/dev/null <<SQL
CREATE SCHEMA conc;
-- conc.h(m, from, hexdigits): a number from hex digits of an md5
CREATE FUNCTION conc.h(m text, f integer, n integer) RETURNS bigint LANGUAGE sql IMMUTABLE
AS \$\$ SELECT ('x' || lpad(substr(m, f, n), 16, '0'))::bit(64)::bigint \$\$;
CREATE FUNCTION conc.batch(s integer, b integer) RETURNS jsonb LANGUAGE sql IMMUTABLE AS \$\$
SELECT jsonb_agg(rec ORDER BY conc.h(m1, 1, 8), i)
  FROM (SELECT i, m1, jsonb_build_object(
                   'api_type', (ARRAY['messages', 'responses', 'gemini'])[1 + conc.h(m1, 9, 2) % 3],
                   'metrics_key', 'key-' || lpad((conc.h(m1, 11, 2) % 24)::text, 2, '0'),
                   'base_url', CASE WHEN conc.h(m1, 13, 2) % 4 = 0 THEN NULL
                                    ELSE 'https://up' || conc.h(m1, 13, 2) % 3 || '.example' END,
                   'success', ok,
                   'status_code', CASE WHEN ok THEN 200 ELSE (ARRAY[429, 500, 502, 0])[1 + conc.h(m1, 17, 2) % 4] END,
                   'latency_ms', conc.h(m2, 1, 8) % 240000 / 8.0,
                   'created_at', CASE WHEN conc.h(m1, 19, 2) % 2 = 0
                                      THEN to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
                                      ELSE to_char(t AT TIME ZONE 'UTC' + interval '5:45', 'YYYY-MM-DD"T"HH24:MI:SS.US"+05:45"') END)
               || CASE WHEN conc.h(m1, 21, 2) % 3 = 0 THEN '{}'::jsonb
                       ELSE jsonb_build_object('model', 'model-' || conc.h(m1, 21, 2) % 5) END
               || CASE WHEN conc.h(m1, 23, 2) % 10 = 0 THEN '{"note": "ignored"}'::jsonb ELSE '{}'::jsonb END AS rec
          FROM generate_series(1, $ROWS) i,
               LATERAL (SELECT md5(s || '/' || b || '/' || i) AS m1, md5(i || '/' || b || '/' || s) AS m2) h,
               LATERAL (SELECT conc.h(m1, 15, 2) % 5 <> 0 AS ok,
                               TIMESTAMPTZ '2026-10-01 00:00+00' + (conc.h(m1, 25, 4) % $DAYS) * interval '1 day'
                                 + (conc.h(m2, 9, 10) % 86400000000) * interval '1 microsecond' AS t) x) r
\$\$;
-- every record sent, as rows (filled once the sessions are done)
CREATE TABLE conc.sent (api_type text, metrics_key text, base_url text, model text, success boolean,
                        status_code integer, latency_ms double precision, created_at timestamptz);
SQL

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
        [ "$("${PSQL[@]}" -d "$DB" -At -c "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $BARRIER AND granted
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")" = 1 ] && return 0
        sleep 0.05
    done
    die "the barrier lock was never taken"
}
WAIT_BARRIER="SELECT pg_advisory_lock_shared($BARRIER); SELECT pg_advisory_unlock_shared($BARRIER);"

# run_sessions NAME N SQLFN: N psql sessions at once, session s reading the SQL that `SQLFN s`
# prints after the barrier; output in $LOGS/NAME-s.out. Fails with the tail of each failed session.
run_sessions() {
    local name=$1 n=$2 fn=$3 s i failed=0 pids=()
    barrier "$n"
    for s in $(seq "$n"); do
        { echo "$WAIT_BARRIER"; "$fn" "$s"; } | "${PSQL[@]}" -d "$DB" -At >"$LOGS/$name-$s.out" 2>&1 &
        pids+=($!)
    done
    for i in "${!pids[@]}"; do
        if ! wait "${pids[$i]}"; then failed=1; echo "session $((i + 1)) failed:"; tail -5 "$LOGS/$name-$((i + 1)).out"; fi
    done
    wait "$BARRIER_PID" || die "the barrier session failed"
    [ "$failed" = 0 ] || die "a concurrent $name session failed"
}

# --- 1. ops_add_records ----------------------------------------------------------------------
add_sql() { local b; for b in $(seq "$BATCHES"); do echo "SELECT 'sent ' || ops_add_records(conc.batch($1, $b));"; done; }
run_sessions records "$SESSIONS" add_sql
for s in $(seq "$SESSIONS"); do
    [ "$(grep -cx "sent $ROWS" "$LOGS/records-$s.out")" = "$BATCHES" ] \
        || { tail -5 "$LOGS/records-$s.out"; die "session $s: ops_add_records did not return $ROWS for each of its $BATCHES batches"; }
done
echo "test concurrent ops_add_records ($SESSIONS sessions x $BATCHES x $ROWS rows) ... ok"

q() { "${PSQL[@]}" -d "$DB" -At -c "$1"; }
total=$((SESSIONS * BATCHES * ROWS))
q "INSERT INTO conc.sent
   SELECT r.api_type, r.metrics_key, COALESCE(r.base_url, ''), COALESCE(r.model, ''), r.success, r.status_code, r.latency_ms, r.created_at
     FROM generate_series(1, $SESSIONS) s, generate_series(1, $BATCHES) b,
          LATERAL jsonb_to_recordset(conc.batch(s, b)) AS r(api_type text, metrics_key text, base_url text, model text, success boolean,
                                                           status_code integer, latency_ms double precision, created_at timestamptz)" >/dev/null
got=$(q "SELECT count(*) FROM opsmeter.request_records")
[ "$got" = "$total" ] || die "request_records holds $got rows, $total were sent"
# the stored records are exactly the ones sent (as multisets)
bad=$(q "SELECT (SELECT count(*) FROM (SELECT * FROM conc.sent EXCEPT ALL
                                       SELECT api_type, metrics_key, base_url, model, success, status_code, latency_ms, created_at
                                         FROM opsmeter.request_records) x)
              + (SELECT count(*) FROM (SELECT api_type, metrics_key, base_url, model, success, status_code, latency_ms, created_at
                                         FROM opsmeter.request_records
                                       EXCEPT ALL SELECT * FROM conc.sent) y)")
[ "$bad" = 0 ] || die "$bad records differ between what was sent and request_records"
echo "test request_records holds exactly the $total records sent ... ok"

bad=$(q "WITH ops AS (SELECT a AS api_type, l.* FROM unnest(ARRAY['messages', 'responses', 'gemini']) a,
                                                   LATERAL ops_latest_timestamps(a) l),
              raw AS (SELECT api_type, metrics_key, max(created_at) FILTER (WHERE success) AS last_success_at,
                             max(created_at) FILTER (WHERE NOT success) AS last_failure_at
                        FROM opsmeter.request_records GROUP BY 1, 2)
         SELECT (SELECT count(*) FROM (TABLE ops EXCEPT ALL TABLE raw) x) + (SELECT count(*) FROM (TABLE raw EXCEPT ALL TABLE ops) y)")
[ "$bad" = 0 ] || die "ops_latest_timestamps differs from max(created_at) per key of the raw records ($bad rows)"
echo "test ops_latest_timestamps = max(created_at) per key after the race ... ok"

# one partition per UTC day, named for it, holding exactly that day's rows
bad=$(q "SELECT concat_ws(' ',
           NULLIF(format('%s partitions for %s days', count(*), $DAYS), format('%s partitions for %s days', $DAYS, $DAYS)),
           NULLIF(format('%s distinct days', count(DISTINCT day)), format('%s distinct days', $DAYS)),
           CASE WHEN min(day) <> DATE '2026-10-01' OR max(day) <> DATE '2026-10-01' + $DAYS - 1 THEN 'wrong days' END,
           CASE WHEN NOT bool_and((SELECT relname FROM pg_class WHERE oid = partition) = 'request_records_p' || to_char(day, 'YYYYMMDD'))
                THEN 'misnamed partitions' END,
           (SELECT NULLIF(format('%s tables named request_records_p*', count(*)), format('%s tables named request_records_p*', $DAYS))
              FROM pg_class WHERE relnamespace = 'opsmeter'::regnamespace AND relkind = 'r' AND relname LIKE 'request\_records\_p%'),
           (SELECT NULLIF(format('%s rows outside their day''s partition', count(*)), '0 rows outside their day''s partition')
              FROM opsmeter.request_records r LEFT JOIN ops_record_partitions() p ON p.partition = r.tableoid
             WHERE p.day IS DISTINCT FROM (r.created_at AT TIME ZONE 'UTC')::date))
         FROM ops_record_partitions()")
[ -z "$bad" ] || die "partitions after the race: $bad"
echo "test one partition per UTC day after the race ($DAYS days) ... ok"

# --- 2. ops_daily_stats_run on the same day ---------------------------------------------------
# DS_DAYS days (2 .. DS_DAYS + 1 days ago, UTC) of 20000 log_records each, 14 models
q "INSERT INTO opsmeter.log_records (created_at, model_name, status_code, tokens_in, tokens_out, latency_ms)
   SELECT ((now() AT TIME ZONE 'UTC')::date - k) AT TIME ZONE 'UTC' + (i % 86400) * interval '1 second',
          'model-' || i % 14, (ARRAY[200, 200, 304, 400, 429, 500, 0])[1 + i % 7], i % 1000, i % 300, i % 5000
     FROM generate_series(2, $DS_DAYS + 1) k, generate_series(1, 20000) i" >/dev/null
for k in $(seq 2 $((DS_DAYS + 1))); do
    run_sql() { echo "SELECT 'written ' || ops_daily_stats_run((now() AT TIME ZONE 'UTC')::date - $k);"; }
    rm -f "$LOGS"/daily-stats-*.out
    run_sessions daily-stats "$DS_SESSIONS" run_sql
    results=$(cat "$LOGS"/daily-stats-*.out | grep '^written ' | sort | uniq -c | awk '{print $1 " " $3}' | tr '\n' ' ')
    [ "$results" = "$((DS_SESSIONS - 1)) false 1 true " ] \
        || die "$DS_SESSIONS concurrent ops_daily_stats_run for day today-$k returned: $results (want 1 true)"
done
bad=$(q "SELECT (SELECT count(*) FROM opsmeter.daily_stats) <> $DS_DAYS
             OR EXISTS (SELECT FROM oracle.ds_days_diff((now() AT TIME ZONE 'UTC')::date - $DS_DAYS - 1, (now() AT TIME ZONE 'UTC')::date - 2))")
[ "$bad" = f ] || die "daily_stats after concurrent runs: not one correct row per day"
echo "test concurrent ops_daily_stats_run ($DS_SESSIONS sessions x $DS_DAYS days): one true, one row ... ok"

"${PSQL[@]}" -d postgres -c "DROP DATABASE $DB"
