#!/usr/bin/env bash
# The README's pg_cron recipe, run by a real pg_cron (SPEC §7: "CI runs it against a real
# pg_cron"). The cluster must preload pg_cron with cron.database_name = 'opsmeter_cron' and
# cron.use_background_workers = on (scripts/test.sh starts it so).
#   tests/cron/rollups.sh start SOCKDIR PORT   fresh database, a generated day, the job scheduled
#   tests/cron/rollups.sh check SOCKDIR PORT   waits (up to CRON_WAIT seconds) for a successful
#                                              run of each job, then checks what each did (the
#                                              rollup against the exact oracle)
# The README's daily and hourly jobs (ops_run_job for daily_stats, partitions, retention; the
# records' cleanup) are scheduled every minute here, with the README's commands.
# Debian's pg_cron 1.4 schedules by the minute, so `start` runs early and `check` late.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/scripts/common.sh"
cmd="${1:?start|check}"; SOCK="${2:?socket dir}"; PORT="${3:?port}"
DB=opsmeter_cron
PSQL=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres)
cd "$ROOT"

# what pg_cron did, printed before a failure: its jobs, their runs, its processes and (when
# CRON_SERVER_LOG names the server log) the log's pg_cron lines
diagnose() {
    {
        echo "--- cron.job, cron.job_run_details, pg_cron processes at $(date -u +%FT%TZ)"
        "${PSQL[@]}" -d "$DB" -c "SELECT jobid, jobname, schedule, active FROM cron.job ORDER BY jobid" \
            -c "SELECT jobid, runid, status, start_time, end_time, left(return_message, 120) AS message
                  FROM cron.job_run_details ORDER BY runid DESC LIMIT 30" \
            -c "SELECT pid, backend_type, datname, state, wait_event_type, wait_event, backend_start, left(query, 60) AS query
                  FROM pg_stat_activity WHERE backend_type LIKE 'pg_cron%' OR application_name = 'pg_cron'" || true
        if [ -n "${CRON_SERVER_LOG:-}" ] && [ -r "$CRON_SERVER_LOG" ]; then
            echo "--- the server log's pg_cron, FATAL, PANIC and WARNING lines (last 60)"
            grep -E 'cron|FATAL|PANIC|WARNING|background worker' "$CRON_SERVER_LOG" | tail -60 || true
        fi
    } >&2
}

# make pg_cron reread its whole job list (any change of cron.job does) and note when, for
# `check`'s "never started" test
reload_jobs() {
    "${PSQL[@]}" -d "$DB" -c "SELECT cron.alter_job(jobid, active := true) FROM cron.job" \
        -c "DELETE FROM public.cron_test" -c "INSERT INTO public.cron_test VALUES (now())" >/dev/null
}

case "$cmd" in
start)
    # An existing database is kept (make test starts a new cluster, but a rerun against a
    # running one finds it): dropping it would end pg_cron's launcher for good (it is not
    # restarted after a clean exit). Its contents are rebuilt instead.
    if [ "$("${PSQL[@]}" -d postgres -Atc "SELECT count(*) FROM pg_database WHERE datname = '$DB'")" = 0 ]; then
        "${PSQL[@]}" -d postgres -c "CREATE DATABASE $DB"
    fi
    "${PSQL[@]}" -d "$DB" -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS pg_cron" \
        -c "SELECT cron.unschedule(jobid) FROM cron.job" -c "TRUNCATE cron.job_run_details" \
        -c "DROP EXTENSION IF EXISTS opsmeter CASCADE" -c "DROP SCHEMA IF EXISTS oracle CASCADE" \
        -c "CREATE EXTENSION opsmeter" -f tests/oracle/rollups_oracle.sql -f tests/oracle/compare.sql >/dev/null
    # yesterday is due from 00:00 UTC, not 00:05, so a run just after midnight is checked alike;
    # retention keeps the fixed test day (2026-11-21), however long ago it is
    "${PSQL[@]}" -d "$DB" -c "SET client_min_messages = warning" -c "SELECT opsmeter_version()" \
        -c "ALTER DATABASE $DB SET opsmeter.daily_stats_at = '00:00'" \
        -c "ALTER DATABASE $DB SET opsmeter.retention = '0'" >/dev/null
    "${PSQL[@]}" -d "$DB" -v day=2026-11-21 -v usage_rows=20000 -v seed=0.3 -f bench/traffic.sql >/dev/null
    # yesterday's log_records (daily stats) and request records of 40 days ago and of today
    "${PSQL[@]}" -d "$DB" <<'SQL' >/dev/null
INSERT INTO opsmeter.log_records (created_at, model_name, status_code, tokens_in, tokens_out, latency_ms)
SELECT ((now() AT TIME ZONE 'UTC')::date - 1)::timestamp AT TIME ZONE 'UTC' + i * interval '17 seconds',
       'model-' || (i % 3), CASE WHEN i % 10 = 0 THEN 500 ELSE 200 END, 10, 20, 100 + i % 50
  FROM generate_series(0, 4999) i;
SELECT ops_add_records((SELECT jsonb_agg(jsonb_build_object('api_type', 'messages', 'metrics_key', 'k' || (i % 4),
           'success', true, 'status_code', 200, 'latency_ms', 100,
           'created_at', to_char(now() AT TIME ZONE 'UTC' - d * interval '1 day', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')))
         FROM generate_series(1, 100) i, (VALUES (40), (0)) v(d)));
SQL
    # the recipe, as the README gives it (every minute instead of daily or hourly)
    "${PSQL[@]}" -d "$DB" -Atc "SELECT cron.schedule('opsmeter-rollup', '* * * * *', \$\$SELECT ops_run_job('rollup')\$\$)" \
        -c "SELECT cron.schedule('opsmeter-daily-stats', '* * * * *', \$\$SELECT ops_run_job('daily_stats')\$\$)" \
        -c "SELECT cron.schedule('opsmeter-partitions', '* * * * *', \$\$SELECT ops_run_job('partitions')\$\$)" \
        -c "SELECT cron.schedule('opsmeter-retention', '* * * * *', \$\$SELECT ops_run_job('retention')\$\$)" \
        -c "SELECT cron.schedule('opsmeter-records', '* * * * *', \$\$SELECT ops_cleanup_records(now() - interval '30 days')\$\$)" >/dev/null
    # pg_cron reloads its job list when cron.job changes, and can miss a job scheduled while it
    # is reloading (citusdata/pg_cron#362). Once it is quiet, one more change of cron.job makes
    # it reload the whole list; `check` repeats this if a job still never starts.
    "${PSQL[@]}" -d "$DB" -c "SET client_min_messages = warning" \
        -c "CREATE TABLE IF NOT EXISTS public.cron_test (scheduled_at timestamptz NOT NULL)" >/dev/null
    sleep 2
    reload_jobs
    ;;
check)
    deadline=$(( $(date +%s) + ${CRON_WAIT:-100} ))
    hard=$(( deadline + 200 ))
    touched=0
    status=""
    while [ "$(date +%s)" -lt "$deadline" ]; do
        # each job's first finished run; done when all five have one
        status=$("${PSQL[@]}" -d "$DB" -Atc "SELECT CASE WHEN count(*) = 5 THEN string_agg(j.jobname || ' ' || r.status || ': ' || coalesce(r.return_message, ''), '; ') END
                                               FROM cron.job j
                                               JOIN LATERAL (SELECT * FROM cron.job_run_details d WHERE d.jobid = j.jobid
                                                               AND d.status IN ('succeeded', 'failed')
                                                             ORDER BY d.start_time LIMIT 1) r ON true")
        [ -n "$status" ] && break
        # a job with no run at all, 70 s after it was scheduled (a minute boundary has passed):
        # pg_cron has not loaded it; make it reload its job list (twice at most) and wait on
        lost=$("${PSQL[@]}" -d "$DB" -Atc "SELECT string_agg(j.jobname, ', ' ORDER BY j.jobid) FROM cron.job j
                                             WHERE NOT EXISTS (SELECT FROM cron.job_run_details d WHERE d.jobid = j.jobid)
                                               AND (SELECT max(scheduled_at) FROM public.cron_test) < now() - interval '70 seconds'")
        if [ -n "$lost" ] && [ "$touched" -lt 2 ]; then
            reload_jobs
            touched=$((touched + 1))
            echo "note: pg_cron had never started $lost; cron.job touched so that it reloads its job list" >&2
            deadline=$(( $(date +%s) + 75 ))
        fi
        # runs under way: wait for them to finish (up to 200 s beyond the wait)
        busy=$("${PSQL[@]}" -d "$DB" -Atc "SELECT count(*) FROM cron.job_run_details WHERE status NOT IN ('succeeded', 'failed')")
        if [ "$busy" -gt 0 ] && [ $(( deadline - $(date +%s) )) -lt 5 ] && [ "$deadline" -lt "$hard" ]; then
            deadline=$(( deadline + 5 ))
        fi
        sleep 2
    done
    case "$status" in
    "") diagnose; die "pg_cron did not run all five opsmeter jobs within ${CRON_WAIT:-100} s" ;;
    *failed*) diagnose; die "a pg_cron job failed: $status" ;;
    esac
    diff=$("${PSQL[@]}" -d "$DB" -Atc "SELECT d.ops_rows > 0 AND d.missing + d.extra + d.bad_counts + d.bad_percentiles + d.bad_avg_max = 0
                                         FROM oracle.hourly_diff('2026-11-21 00:00+00', '2026-11-22 00:00+00') d")
    [ "$diff" = t ] || die "the rollup pg_cron ran differs from the oracle"
    echo "test pg_cron runs ops_run_job(rollup)  ... ok"
    # (bench/traffic.sql also logs requests on 2026-11-21, which may be yesterday)
    ok=$("${PSQL[@]}" -d "$DB" -Atc "SELECT (d.requests, d.success, d.failed, d.tokens_in, d.tokens_out) = (l.n, l.ok, l.bad, l.tin, l.tout)
                                          AND (SELECT count(*) = 1 FROM opsmeter.daily_stats
                                                WHERE date >= (now() AT TIME ZONE 'UTC')::date - 7)
                                     FROM opsmeter.daily_stats d,
                                          LATERAL (SELECT count(*) AS n, count(*) FILTER (WHERE status_code BETWEEN 200 AND 399) AS ok,
                                                          count(*) FILTER (WHERE status_code >= 400 OR status_code = 0) AS bad,
                                                          sum(tokens_in) AS tin, sum(tokens_out) AS tout
                                                     FROM opsmeter.log_records
                                                    WHERE created_at >= d.date::timestamp AT TIME ZONE 'UTC'
                                                      AND created_at < (d.date + 1)::timestamp AT TIME ZONE 'UTC') l
                                    WHERE d.date = (now() AT TIME ZONE 'UTC')::date - 1")
    [ "$ok" = t ] || die "pg_cron's daily_stats job did not write yesterday's row as expected"
    echo "test pg_cron runs ops_run_job(daily_stats) ... ok"
    ok=$("${PSQL[@]}" -d "$DB" -Atc "SELECT (SELECT array_agg(day - (now() AT TIME ZONE 'UTC')::date ORDER BY day) FROM ops_record_partitions()) = '{0,1,2,3}'
                                          AND (SELECT count(*) FROM ops_log_partitions() WHERE day >= (now() AT TIME ZONE 'UTC')::date) = 16
                                          AND (SELECT count(*) FROM opsmeter.usage_logs_default) = 0
                                          AND (SELECT count(*) FROM opsmeter.request_records) = 100")
    [ "$ok" = t ] || die "pg_cron's partitions and records jobs did not create the partitions ahead, move the logs out of the default partitions or drop the 40-day-old records"
    echo "test pg_cron runs partitions, records  ... ok"
    ok=$("${PSQL[@]}" -d "$DB" -Atc "SELECT count(DISTINCT job) = 4 AND bool_and(status = 'ok') AND bool_and(runner <> 'opsmeter worker')
                                     FROM opsmeter.job_runs")
    [ "$ok" = t ] || die "opsmeter.job_runs does not show pg_cron's ok runs of the four jobs"
    echo "test job_runs shows pg_cron's runs     ... ok"
    "${PSQL[@]}" -d "$DB" -Atc "SELECT cron.unschedule(jobid) FROM cron.job" >/dev/null
    ;;
esac
