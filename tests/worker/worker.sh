#!/usr/bin/env bash
# The background worker (SPEC §7, 0.7.0) in a real cluster of its own that preloads
# 'opsmeter,pg_cron', with short intervals (rollup and maintenance every 2 s). No SQL call of
# ours runs a job unless a step says so. Steps, each a "... ok" line:
#  1. without opsmeter.database no worker starts and the log says so;
#  2. with it, the worker waits for CREATE EXTENSION (one LOG line, no error loop);
#  3. traffic committed with CREATE EXTENSION: metrics_hourly/daily (equal to the exact
#     oracle), yesterday's daily_stats and the day partitions ahead appear by themselves, and
#     yesterday's rows leave the default partitions; then new traffic is rolled up within two
#     rollup intervals;
#  4. pg_terminate_backend(worker): it comes back and rolls up new traffic;
#  5. a source re-pointed at a dropped table: rollup runs are recorded as errors while the
#     partitions job and a queue worker go on; resetting the source heals it;
#  6. a queue worker: every operation handled exactly once (its effect and its completion in
#     one transaction), the raising ones failed into retries with the handler's message;
#  7. the worker and pg_cron running the same (slow) job: one runs, the other is skipped, runs
#     never overlap, and the rollup equals the oracle afterwards;
#  8. SIGTERM during a long rollup: pg_ctl stop -m fast returns promptly (well before the job
#     could finish), the run leaves nothing behind, the worker is back after a start;
#  9. opsmeter.job_runs stays at opsmeter.job_runs_keep;
# 10. retention: 40 days of usage_logs partitions, opsmeter.retention '30 days' set with ALTER
#     SYSTEM and a reload (SIGHUP) → exactly the 10 oldest day partitions dropped, no row
#     DELETEd (a DELETE trigger logs nothing), the table's size falls, a user table registered
#     as a source keeps every row.
#   tests/worker/worker.sh PORT
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/scripts/common.sh"
PORT="${1:?port}"
DB=opsmeter_worker
NAME=.test-worker
cd "$ROOT"

base="$(pg_dir "$NAME")"
bash scripts/cluster.sh stop "$NAME" >/dev/null
rm -rf "${base:?}/data" "$base/log"
SOCK="$(bash scripts/cluster.sh sockdir "$NAME")"
LOG="$base/log"
PSQL=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres)
q() { "${PSQL[@]}" -d "$DB" -Atc "$1"; }
COMMON=("timezone = 'UTC'" "shared_preload_libraries = 'opsmeter,pg_cron'"
        "cron.database_name = '$DB'" "cron.use_background_workers = on"
        "opsmeter.rollup_interval = '2s'" "opsmeter.maintenance_interval = '2s'"
        "opsmeter.rollup_lag = 0" "opsmeter.retention = '0'" "opsmeter.daily_stats_at = '00:00'")
start() { bash scripts/cluster.sh start "$NAME" "$PORT" "${COMMON[@]}" "$@"; }
# wait_for SECONDS SQL: polls until SQL returns t; prints the seconds it took
wait_for() {
    local limit="$1" sql="$2" t0 now
    t0=$(date +%s.%N)
    while :; do
        [ "$(q "$sql" 2>/dev/null || true)" = t ] && break
        now=$(date +%s.%N)
        if awk -v a="$now" -v b="$t0" -v l="$limit" 'BEGIN { exit !(a - b > l) }'; then
            return 1
        fi
        sleep 0.2
    done
    awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.1f", a - b }'
}
worker_pid() { q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'opsmeter worker'"; }

# 1. preloaded, no opsmeter.database
start
"${PSQL[@]}" -d postgres -c "CREATE DATABASE $DB"
grep -q "opsmeter.database is not set, so no opsmeter background worker starts" "$LOG" \
    || die "no LOG line saying that no worker starts without opsmeter.database"
[ -z "$(worker_pid)" ] || die "a worker runs although opsmeter.database is not set"
echo "test no opsmeter.database: no worker, a LOG line  ... ok"

# 2. the worker waits for CREATE EXTENSION (pg_cron's launcher, started before the database
# existed, logged a FATAL in step 1: only the lines from here on count)
from_line=$(( $(wc -l <"$LOG") + 1 ))
start "opsmeter.database = '$DB'"
sleep 12 # two of the worker's 5 s looks
[ -n "$(worker_pid)" ] || die "no opsmeter worker in pg_stat_activity"
n=$(tail -n +"$from_line" "$LOG" | grep -c "waiting for CREATE EXTENSION opsmeter" || true)
[ "$n" = 1 ] || die "expected one 'waiting for CREATE EXTENSION' LOG line, found $n"
! tail -n +"$from_line" "$LOG" | grep -E "ERROR|FATAL" | grep -q . \
    || { tail -n +"$from_line" "$LOG" | grep -E "ERROR|FATAL" | head -5; die "the waiting worker logged errors"; }
echo "test the worker waits for CREATE EXTENSION (1 line)  ... ok"

# 3. traffic committed together with the extension; then nothing but the worker
"${PSQL[@]}" -d "$DB" -c "SET client_min_messages = warning" -c "BEGIN" -c "CREATE EXTENSION opsmeter" \
    -c "CREATE EXTENSION pg_cron" -f bench/traffic.sql -c "SET client_min_messages = warning" \
    -f tests/oracle/rollups_oracle.sql -f tests/oracle/compare.sql >/dev/null 2>&1
yday=$(q "SELECT (now() AT TIME ZONE 'UTC')::date - 1")
took=$(wait_for 30 "SELECT (SELECT count(*) FROM opsmeter.metrics_daily WHERE bucket_date = '$yday') > 0
                       AND (SELECT count(*) FROM opsmeter.daily_stats WHERE date = '$yday') = 1
                       AND (SELECT count(*) FROM ops_log_partitions() WHERE day >= (now() AT TIME ZONE 'UTC')::date) = 16
                       AND (SELECT count(*) FROM opsmeter.usage_logs_default) = 0
                       AND (SELECT count(*) FROM opsmeter.log_records_default) = 0") \
    || { q "SELECT job, status, message FROM opsmeter.job_runs ORDER BY id" | tail -20; die "the worker did not roll up, write daily stats and create partitions within 30 s"; }
ok=$(q "SELECT d.ops_rows > 0 AND d.missing + d.extra + d.bad_counts + d.bad_percentiles + d.bad_avg_max = 0
          FROM oracle.hourly_diff('$yday 00:00+00', '$yday'::date + 1) d")
[ "$ok" = t ] || die "the worker's hourly rollup differs from the oracle"
ok=$(q "SELECT d.ops_rows > 0 AND d.missing + d.extra + d.bad_counts = 0 FROM oracle.daily_diff('$yday', '$yday'::date + 1) d")
[ "$ok" = t ] || die "the worker's daily rollup differs from the oracle"
ok=$(q "SELECT (d.requests, d.success, d.failed) = (SELECT count(*), count(*) FILTER (WHERE status_code BETWEEN 200 AND 399),
               count(*) FILTER (WHERE status_code >= 400 OR status_code = 0) FROM opsmeter.log_records)
          FROM opsmeter.daily_stats d WHERE d.date = '$yday'")
[ "$ok" = t ] || die "the worker's daily_stats row does not count yesterday's log_records"
ok=$(q "SELECT count(DISTINCT job) = 4 FROM opsmeter.job_runs WHERE runner = 'opsmeter worker' AND status = 'ok'")
[ "$ok" = t ] || die "job_runs does not show an ok run of each built-in job by the worker"
echo "test rollups, daily stats, partitions by themselves (${took}s) ... ok"
# now that the worker runs its jobs: new traffic is rolled up within two rollup intervals (2 s
# each; 2 s more for a loaded machine), with no call of ours
sent=$(q "WITH n AS (INSERT INTO opsmeter.usage_logs (created_at, group_id, model, duration_ms)
                     SELECT now() - interval '10 ms' * i, 2, 'fresh', 40 + i FROM generate_series(1, 25) i
                     RETURNING 1)
          SELECT now() FROM n LIMIT 1")
took=$(wait_for 6 "SELECT EXISTS (SELECT 1 FROM opsmeter.job_runs WHERE job = 'rollup' AND status = 'ok' AND started_at > '$sent')
                      AND (SELECT sum(success_count) FROM opsmeter.metrics_hourly
                            WHERE platform IS NULL AND group_id IS NULL AND bucket_start = date_trunc('hour', '$sent'::timestamptz, 'UTC'))
                          >= (SELECT count(*) FROM opsmeter.usage_logs u JOIN opsmeter.groups g ON g.id = u.group_id
                               WHERE u.created_at >= date_trunc('hour', '$sent'::timestamptz, 'UTC') AND u.created_at <= '$sent')") \
    || die "new traffic was not rolled up within two rollup intervals (+2 s)"
echo "test new traffic rolled up within two intervals (${took}s) ... ok"

# 4. pg_terminate_backend: the worker comes back and carries on
old=$(worker_pid)
q "SELECT pg_terminate_backend($old)" >/dev/null
# the rows stay inside the current UTC hour: with opsmeter.rollup_lag = 0, a row logged into an
# hour before the latest rolled-up one is not the catch-up's to redo (README, pg_cron), and
# near an hour's start the rows of the step above may already have rolled up the new hour
q "INSERT INTO opsmeter.usage_logs (created_at, group_id, model, duration_ms)
   SELECT GREATEST(now() - interval '1 second' * i, date_trunc('hour', now(), 'UTC')), 1, 'late', 100 + i
     FROM generate_series(1, 40) i" >/dev/null
took=$(wait_for 30 "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'opsmeter worker' AND pid <> $old)
                       AND EXISTS (SELECT 1 FROM opsmeter.job_runs r WHERE r.job = 'rollup' AND r.status = 'ok' AND r.pid <> $old
                                      AND r.started_at > (SELECT max(created_at) FROM opsmeter.usage_logs WHERE model = 'late'))
                       AND (SELECT sum(success_count) FROM opsmeter.metrics_hourly WHERE platform IS NULL
                             AND bucket_start >= date_trunc('hour', now() - interval '40 seconds', 'UTC'))
                           >= (SELECT count(*) FROM opsmeter.usage_logs u JOIN opsmeter.groups g ON g.id = u.group_id
                                WHERE u.created_at >= date_trunc('hour', now() - interval '40 seconds', 'UTC'))") \
    || die "the worker did not come back and roll up new traffic within 30 s of pg_terminate_backend"
echo "test pg_terminate_backend: back and rolling up (${took}s) ... ok"

# 5 and 6. a broken source makes rollup fail while the other jobs and a queue worker go on
"${PSQL[@]}" -d "$DB" >/dev/null <<'SQL'
CREATE TABLE handled (op_id text PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION handle(op opsmeter.operations) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO handled (op_id) VALUES (op.op_id);
    IF op.op_code = 500 THEN
        RAISE EXCEPTION 'upstream said 500 for %', op.op_id;
    END IF;
END $$;
CREATE TABLE gone_usage (LIKE opsmeter.usage_logs);
SELECT ops_set_source('usage_logs', 'gone_usage');
DROP TABLE gone_usage;
SELECT ops_worker_register('handler', 'handle(opsmeter.operations)', 50, '200 milliseconds');
SELECT ops_op_save_batch((SELECT jsonb_agg(jsonb_build_object('op_id', 'op-' || i,
           'op_code', CASE WHEN i % 10 = 0 THEN 500 ELSE 200 END,
           'timestamp', to_char(now() - interval '1 minute' + i * interval '1 ms', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')))
         FROM generate_series(1, 300) i));
SQL
broke=$(q "SELECT now()")
took=$(wait_for 30 "SELECT (SELECT count(*) FROM opsmeter.job_runs WHERE job = 'rollup' AND status = 'error' AND started_at > '$broke') >= 2
                       AND (SELECT count(*) FROM opsmeter.job_runs WHERE job = 'partitions' AND status = 'ok' AND started_at > '$broke') >= 2
                       AND (SELECT count(*) FROM opsmeter.operations WHERE trustlog_status = 'TRUSTLOGGED') = 270
                       AND (SELECT count(*) FROM opsmeter.retries) = 30") \
    || { q "SELECT job, status, message FROM opsmeter.job_runs ORDER BY id DESC LIMIT 10"; die "rollup errors, other jobs and the queue worker did not show within 30 s"; }
ok=$(q "SELECT consecutive_failures >= 2 AND last_status = 'error' AND last_message <> ''
          FROM ops_health() WHERE job = 'rollup'")
[ "$ok" = t ] || { q "SELECT * FROM ops_health()"; die "ops_health() does not show the rollup's consecutive failures"; }
echo "test a failing job is recorded, the others go on (${took}s) ... ok"
ok=$(q "SELECT (SELECT count(*) FROM handled) = 270
           AND NOT EXISTS (SELECT 1 FROM handled h JOIN opsmeter.operations o USING (op_id) WHERE o.trustlog_status <> 'TRUSTLOGGED')
           AND NOT EXISTS (SELECT 1 FROM opsmeter.operations o LEFT JOIN handled h USING (op_id)
                            WHERE o.trustlog_status = 'TRUSTLOGGED' AND h.op_id IS NULL)
           AND (SELECT bool_and(r.retry_status = 'PENDING' AND r.error_message = 'upstream said 500 for ' || r.op_id)
                  FROM opsmeter.retries r) AND (SELECT count(*) FROM opsmeter.retries r JOIN opsmeter.operations o USING (op_id)
                                                 WHERE o.op_code = 500) = 30")
[ "$ok" = t ] || die "the queue worker did not handle each operation exactly once with its effect, or lost a failure's message"
ok=$(q "SELECT sum(rows) = 270 AND bool_and(runner = 'opsmeter worker') FROM opsmeter.job_runs WHERE job = 'handler'")
[ "$ok" = t ] || die "job_runs does not add up to the 270 operations the queue worker completed"
echo "test queue worker: 270 handled once, 30 failed with the message ... ok"
q "SELECT ops_reset_source('usage_logs')" >/dev/null
took=$(wait_for 30 "SELECT last_status = 'ok' AND consecutive_failures = 0 FROM ops_health() WHERE job = 'rollup'") \
    || die "rollup did not recover within 30 s of ops_reset_source"
echo "test the failing job recovers (${took}s)             ... ok"

# 7. the worker and pg_cron on the same slow job
"${PSQL[@]}" -d "$DB" >/dev/null <<'SQL'
CREATE VIEW slow_usage AS SELECT u.* FROM opsmeter.usage_logs u, (SELECT pg_sleep(3)) s;
SELECT ops_set_source('usage_logs', 'slow_usage');
SELECT cron.schedule('opsmeter-rollup', '* * * * *', $$SELECT ops_run_job('rollup')$$);
SQL
cron_from=$(q "SELECT now()")
# a second change of cron.job once pg_cron is quiet: it may have missed the first (README, pg_cron)
sleep 2
q "SELECT cron.alter_job(jobid, active := true) FROM cron.job WHERE jobname = 'opsmeter-rollup'" >/dev/null
wait_for 90 "SELECT EXISTS (SELECT 1 FROM cron.job_run_details WHERE status = 'succeeded' AND start_time > '$cron_from')" >/dev/null \
    || die "pg_cron did not run ops_run_job('rollup') within 90 s"
q "SELECT cron.unschedule('opsmeter-rollup')" >/dev/null
wait_for 30 "SELECT NOT EXISTS (SELECT 1 FROM cron.job_run_details WHERE status IN ('starting', 'running'))" >/dev/null \
    || die "pg_cron's run did not finish"
q "SELECT ops_reset_source('usage_logs')" >/dev/null
# the slow run in progress, if any, ends within its 6 s; then one fast run
reset_at=$(q "SELECT now()")
wait_for 30 "SELECT EXISTS (SELECT 1 FROM opsmeter.job_runs WHERE job = 'rollup' AND status = 'ok' AND started_at > '$reset_at')" >/dev/null \
    || die "no rollup run after the source was reset"
overlaps=$(q "SELECT count(*) FROM opsmeter.job_runs a JOIN opsmeter.job_runs b ON a.id < b.id
               WHERE a.job = 'rollup' AND b.job = 'rollup' AND a.status <> 'skipped' AND b.status <> 'skipped'
                 AND a.started_at >= '$cron_from' AND b.started_at >= '$cron_from'
                 AND a.started_at < b.finished_at AND b.started_at < a.finished_at")
skips=$(q "SELECT count(*) FROM opsmeter.job_runs WHERE job = 'rollup' AND status = 'skipped' AND started_at >= '$cron_from'")
cron_runs=$(q "SELECT count(*) FROM opsmeter.job_runs WHERE job = 'rollup' AND runner <> 'opsmeter worker' AND started_at >= '$cron_from'")
[ "$overlaps" = 0 ] || die "$overlaps pairs of rollup runs overlapped in time"
[ "$skips" -ge 1 ] && [ "$cron_runs" -ge 1 ] || die "expected pg_cron's run and a skipped run (skipped: $skips, pg_cron's: $cron_runs)"
ok=$(q "SELECT d.missing + d.extra + d.bad_counts + d.bad_percentiles + d.bad_avg_max = 0
          FROM oracle.hourly_diff('$yday 00:00+00', '$yday'::date + 1) d")
[ "$ok" = t ] || die "after the worker and pg_cron ran the rollup side by side it differs from the oracle"
echo "test worker + pg_cron: one runs, $skips skipped, no overlap ... ok"

# 8. SIGTERM in the middle of a long rollup
"${PSQL[@]}" -d "$DB" >/dev/null <<'SQL'
CREATE OR REPLACE VIEW slow_usage AS SELECT u.* FROM opsmeter.usage_logs u, (SELECT pg_sleep(120)) s;
SELECT ops_set_source('usage_logs', 'slow_usage');
SQL
wait_for 20 "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'opsmeter worker'
                              AND state = 'active' AND query = 'opsmeter job rollup' AND wait_event = 'PgSleep')" >/dev/null \
    || die "the worker did not start the slow rollup"
slow_from=$(q "SELECT xact_start FROM pg_stat_activity WHERE backend_type = 'opsmeter worker'")
stop_at=$(q "SELECT now()")
t0=$(date +%s.%N)
as_pg "$PG_BIN/pg_ctl" -D "$base/data" -m fast -w -t 60 stop >/dev/null
secs=$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.1f", a - b }')
awk -v s="$secs" 'BEGIN { exit !(s < 20) }' || die "pg_ctl stop -m fast took ${secs}s during a long rollup"
# the source is reset before the worker comes back (it would sleep in a rollup again)
start
q "SELECT ops_reset_source('usage_logs')" >/dev/null
start "opsmeter.database = '$DB'"
wait_for 20 "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE backend_type = 'opsmeter worker')" >/dev/null \
    || die "no worker after the restart"
left=$(q "SELECT count(*) FROM opsmeter.job_runs WHERE job = 'rollup' AND started_at >= '$slow_from'
            AND started_at < '$stop_at'")
[ "$left" = 0 ] || die "the interrupted rollup left $left job_runs rows"
echo "test SIGTERM mid-rollup: stopped in ${secs}s, nothing left ... ok"

# 9. the cap on job_runs
"${PSQL[@]}" -d "$DB" -c "ALTER SYSTEM SET opsmeter.job_runs_keep = 10" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1
for _ in $(seq 1 25); do q "SELECT ops_run_job('partitions')" >/dev/null; done
# (a worker run that has not committed yet may hide one row for a moment)
wait_for 10 "SELECT count(*) = 10 FROM opsmeter.job_runs" >/dev/null \
    || die "opsmeter.job_runs holds $(q "SELECT count(*) FROM opsmeter.job_runs") rows, its cap is 10"
"${PSQL[@]}" -d "$DB" -c "ALTER SYSTEM RESET opsmeter.job_runs_keep" -c "SELECT pg_reload_conf()" >/dev/null
echo "test opsmeter.job_runs stays at its cap             ... ok"

# 10. retention by partition
"${PSQL[@]}" -d "$DB" >/dev/null <<'SQL'
INSERT INTO opsmeter.usage_logs (created_at, group_id, model, duration_ms)
SELECT ((now() AT TIME ZONE 'UTC')::date - d)::timestamp AT TIME ZONE 'UTC' + i * interval '13 minutes', 1 + i % 3, 'old', 50 + i
  FROM generate_series(1, 40) d, generate_series(0, 99) i
 WHERE d > 1;
CREATE TABLE user_logs (LIKE opsmeter.log_records INCLUDING DEFAULTS);
INSERT INTO user_logs (id, created_at, model_name, status_code)
SELECT d, now() - d * interval '1 day', 'mine', 200 FROM generate_series(0, 60) d;
SELECT ops_set_source('log_records', 'user_logs');
SQL
took=$(wait_for 30 "SELECT (SELECT count(*) FROM opsmeter.usage_logs_default) = 0
                       AND (SELECT count(*) FROM ops_log_partitions() WHERE parent = 'opsmeter.usage_logs'::regclass
                             AND day BETWEEN (now() AT TIME ZONE 'UTC')::date - 40 AND (now() AT TIME ZONE 'UTC')::date - 1) = 40") \
    || die "the partitions job did not move 40 days of rows out of the default partition within 30 s"
"${PSQL[@]}" -d "$DB" >/dev/null <<'SQL'
CREATE TABLE deleted_log (n int);
CREATE FUNCTION log_delete() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO deleted_log VALUES (1); RETURN OLD; END $$;
CREATE TRIGGER no_delete BEFORE DELETE ON opsmeter.usage_logs FOR EACH ROW EXECUTE FUNCTION log_delete();
SQL
before=$(q "SELECT count(*) || ' ' || (SELECT sum(pg_total_relation_size(partition)) FROM ops_log_partitions()
                                        WHERE parent = 'opsmeter.usage_logs'::regclass) FROM opsmeter.usage_logs")
old_rows=$(q "SELECT count(*) FROM opsmeter.usage_logs WHERE created_at < ((now() AT TIME ZONE 'UTC')::date - 30)::timestamp AT TIME ZONE 'UTC'")
"${PSQL[@]}" -d "$DB" -c "ALTER SYSTEM SET opsmeter.retention = '30 days'" -c "SELECT pg_reload_conf()" >/dev/null
took=$(wait_for 30 "SELECT EXISTS (SELECT 1 FROM opsmeter.job_runs WHERE job = 'retention' AND status = 'ok' AND rows > 0)") \
    || die "retention did not run within 30 s of the reload"
"${PSQL[@]}" -d "$DB" -c "ALTER SYSTEM RESET opsmeter.retention" -c "SELECT pg_reload_conf()" >/dev/null
ok=$(q "SELECT (SELECT sum(rows) FROM opsmeter.job_runs WHERE job = 'retention') = 10
           AND (SELECT min(day) FROM ops_log_partitions() WHERE parent = 'opsmeter.usage_logs'::regclass)
               = (now() AT TIME ZONE 'UTC')::date - 30
           AND (SELECT count(*) FROM ops_log_partitions() WHERE parent = 'opsmeter.usage_logs'::regclass
                 AND day < (now() AT TIME ZONE 'UTC')::date) = 30")
[ "$ok" = t ] || { q "SELECT message FROM opsmeter.job_runs WHERE job = 'retention' AND rows > 0"; die "retention did not drop exactly the 10 oldest day partitions"; }
read -r rows_before size_before <<<"$before"
after=$(q "SELECT count(*) || ' ' || (SELECT sum(pg_total_relation_size(partition)) FROM ops_log_partitions()
                                       WHERE parent = 'opsmeter.usage_logs'::regclass) FROM opsmeter.usage_logs")
read -r rows_after size_after <<<"$after"
[ "$(q "SELECT count(*) FROM deleted_log")" = 0 ] || die "retention DELETEd rows"
[ "$((rows_before - rows_after))" = "$old_rows" ] && [ "$old_rows" = 1000 ] \
    || die "retention removed $((rows_before - rows_after)) rows, the 10 days held $old_rows"
[ "$size_after" -lt "$size_before" ] || die "usage_logs did not shrink ($size_before -> $size_after bytes)"
[ "$(q "SELECT count(*) FROM user_logs")" = 61 ] || die "retention touched the user table registered as a source"
echo "test retention: 10 of 40 days dropped, no DELETE, $size_before -> $size_after bytes ... ok"

bash scripts/cluster.sh stop "$NAME" >/dev/null
