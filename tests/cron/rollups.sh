#!/usr/bin/env bash
# The README's pg_cron recipe, run by a real pg_cron (SPEC §7: "CI runs it against a real
# pg_cron"). The cluster must preload pg_cron with cron.database_name = 'opsmeter_cron' and
# cron.use_background_workers = on (scripts/test.sh starts it so).
#   tests/cron/rollups.sh start SOCKDIR PORT   fresh database, a generated day, the job scheduled
#   tests/cron/rollups.sh check SOCKDIR PORT   waits (up to CRON_WAIT seconds) for a successful
#                                              run, then compares the rollup with the exact oracle
# Debian's pg_cron 1.4 schedules by the minute, so `start` runs early and `check` late.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
source "$ROOT/scripts/common.sh"
cmd="${1:?start|check}"; SOCK="${2:?socket dir}"; PORT="${3:?port}"
DB=opsmeter_cron
PSQL=("$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres)
cd "$ROOT"

case "$cmd" in
start)
    # The database is kept between runs: dropping it would end pg_cron's launcher for good (it
    # is not restarted after a clean exit). Its contents are rebuilt instead.
    if [ "$("${PSQL[@]}" -d postgres -Atc "SELECT count(*) FROM pg_database WHERE datname = '$DB'")" = 0 ]; then
        "${PSQL[@]}" -d postgres -c "CREATE DATABASE $DB"
    fi
    "${PSQL[@]}" -d "$DB" -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS pg_cron" \
        -c "SELECT cron.unschedule(jobid) FROM cron.job" -c "TRUNCATE cron.job_run_details" \
        -c "DROP EXTENSION IF EXISTS opsmeter CASCADE" -c "DROP SCHEMA IF EXISTS oracle CASCADE" \
        -c "CREATE EXTENSION opsmeter" -f tests/oracle/rollups_oracle.sql -f tests/oracle/compare.sql >/dev/null
    "${PSQL[@]}" -d "$DB" -v day=2026-11-21 -v usage_rows=20000 -v seed=0.3 -f bench/traffic.sql >/dev/null
    # the recipe, as the README gives it
    "${PSQL[@]}" -d "$DB" -Atc "SELECT cron.schedule('opsmeter-rollup', '* * * * *', \$\$SELECT ops_rollup_catch_up()\$\$)" >/dev/null
    ;;
check)
    deadline=$(( $(date +%s) + ${CRON_WAIT:-100} ))
    status=""
    while [ "$(date +%s)" -lt "$deadline" ]; do
        status=$("${PSQL[@]}" -d "$DB" -Atc "SELECT status || ': ' || coalesce(return_message, '') FROM cron.job_run_details
                                               WHERE status IN ('succeeded', 'failed') ORDER BY start_time LIMIT 1")
        [ -n "$status" ] && break
        sleep 2
    done
    case "$status" in
    succeeded*) ;;
    "") die "pg_cron did not run the opsmeter-rollup job within ${CRON_WAIT:-100} s" ;;
    *) die "the pg_cron job failed: $status" ;;
    esac
    diff=$("${PSQL[@]}" -d "$DB" -Atc "SELECT d.ops_rows > 0 AND d.missing + d.extra + d.bad_counts + d.bad_percentiles + d.bad_avg_max = 0
                                         FROM oracle.hourly_diff('2026-11-21 00:00+00', '2026-11-22 00:00+00') d")
    [ "$diff" = t ] || die "the rollup pg_cron ran differs from the oracle"
    echo "test pg_cron runs ops_rollup_catch_up  ... ok"
    "${PSQL[@]}" -d "$DB" -Atc "SELECT cron.unschedule('opsmeter-rollup')" >/dev/null
    ;;
esac
